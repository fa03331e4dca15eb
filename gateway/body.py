"""Read a request body under a size limit, refusing as soon as the limit is passed.

The body is streamed, so an oversized upload is answered 413 without ever
being held in memory whole.
"""

from __future__ import annotations

from starlette.requests import Request

from gateway.problems import ApiError


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"request body is larger than {limit} bytes")


async def read_limited_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise _too_large(limit)
        except ValueError:
            raise ApiError(400, "invalid_request", "Content-Length is not a number") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)

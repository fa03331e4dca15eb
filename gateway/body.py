"""Read a request body under a size limit, refusing as soon as the limit is passed.

The body is streamed, so an oversized upload is answered 413 without ever
being held in memory whole.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import Receive

from gateway.problems import ApiError


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"request body is larger than {limit} bytes")


def check_declared_length(declared: str | None, limit: int) -> None:
    # The HTTP server rejects a malformed Content-Length itself; only a well-formed
    # one that is too large is refused here, before a byte of the body is read.
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)


async def receive_limited_body(receive: Receive, limit: int) -> bytes:
    """The body from raw ASGI `receive` messages; 413 as soon as it passes `limit`."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect: nobody to answer
            raise ApiError(400, "invalid_json", "the client went away before the body ended")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def read_limited_body(request: Request, limit: int) -> bytes:
    """The same for a Starlette `Request` (the admin endpoints)."""
    check_declared_length(request.headers.get("content-length"), limit)
    return await receive_limited_body(request.receive, limit)

"""The gateway's HTTP errors: one `ApiError` per answer, rendered as the contract's JSON body.

Every error body is `{"error": "<code>", "message": "<human text>", ...}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

_encoder = msgspec.json.Encoder()


class ApiError(Exception):
    """An error answer: status, machine code, human message, optional extras and headers."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def body(self) -> bytes:
        """The contract's JSON error body: every renderer of an error sends these bytes."""
        return _encoder.encode({"error": self.code, "message": self.message, **self.extra})

    def to_response(self) -> Response:
        return Response(self.body(), self.status, self.headers, "application/json")


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(_encoder.encode(body), status, dict(headers or {}), "application/json")


async def api_error_handler(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, ApiError):  # registered for ApiError only
        raise exc
    return exc.to_response()


def unavailable(message: str, retry_after_s: int = 1) -> ApiError:
    return ApiError(503, "unavailable", message, headers={"Retry-After": str(retry_after_s)})


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 answers, in the contract's JSON shape."""
    status = getattr(exc, "status_code", 500)
    headers = getattr(exc, "headers", None)
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
    message = {404: "no such resource", 405: "method not allowed"}.get(status, "request failed")
    return ApiError(status, code, message, headers=headers).to_response()


async def internal_error_handler(request: Request, exc: Exception) -> Response:
    """A bug, never an input: log it with its traceback, answer without one."""
    return ApiError(500, "internal_error", "internal error").to_response()

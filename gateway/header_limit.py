"""Refuse requests whose headers are too large (431), before any other work.

h11 bounds only an *incomplete* request head: a client that sends a huge head in
one go gets it parsed whole. This layer bounds what the app will look at.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.problems import ApiError

HEADERS_MAX_BYTES = 16 * 1024


class HeaderLimit:
    def __init__(self, app: ASGIApp, max_bytes: int = HEADERS_MAX_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = sum(len(name) + len(value) + 4 for name, value in scope["headers"])
            if size > self.max_bytes:
                error = ApiError(
                    431,
                    "headers_too_large",
                    f"request headers are larger than {self.max_bytes} bytes",
                    headers={"Connection": "close"},
                )
                await error.to_response()(scope, receive, send)
                return
        await self.app(scope, receive, send)

"""Load shedding: at most `limit` requests of the public API in flight per process.

Past the cap a request is answered 503 at once, before its body is read: a
bounded amount of work instead of an unbounded queue that would make every
request late. Probes and metrics are never shed.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.problems import unavailable

SHED_RETRY_AFTER_S = 1


class InFlightLimit:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0
        self.shed = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            self.shed += 1
            response = unavailable("the gateway is at capacity; retry shortly", SHED_RETRY_AFTER_S)
            await response.to_response()(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

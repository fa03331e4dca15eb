"""Load shedding: the public API answers 503 at once when this process cannot serve in time.

Two signals, checked on every public request before anything else is done with
it (the body is never read):
- lag (gateway.shed_policy): the share of requests admitted while the event
  loop runs later than `shed_lag_ms`, the queue a flash crowd builds before the
  app where no count can see it;
- count: at most `in_flight_max` requests in flight, a hard cap behind it.

A shed request gets `503 unavailable` from bytes built once, with a
`Retry-After` drawn from `retry_after_s` to three times it, so the shoppers a
crowd turned away do not all come back in the same second. Probes, metrics and
the status page are never shed.
"""

from __future__ import annotations

import random

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.problems import unavailable
from gateway.shed_policy import ShedPolicy

SHED_PREFIX = "/v1/"
RETRY_AFTER_SPREAD = 3


class ShedCounts:
    """Requests shed so far, by the signal that shed them (read by the metrics)."""

    def __init__(self) -> None:
        self.lag = 0
        self.in_flight = 0


class LoadShedder:
    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: int,
        policy: ShedPolicy | None,
        counts: ShedCounts,
        retry_after_s: int = 1,
    ) -> None:
        self.app = app
        self.limit = limit
        self.policy = policy
        self.counts = counts
        self.in_flight = 0
        error = unavailable("the gateway is at capacity; retry after the Retry-After seconds")
        self._body = error.body()
        self._headers = [
            [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(self._body)).encode()),
                (b"retry-after", str(seconds).encode()),
            ]
            for seconds in range(retry_after_s, retry_after_s * RETRY_AFTER_SPREAD + 1)
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(SHED_PREFIX):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            self.counts.in_flight += 1
        elif self.policy is not None and not self.policy.admit():
            self.counts.lag += 1
        else:
            self.in_flight += 1
            try:
                await self.app(scope, receive, send)
            finally:
                self.in_flight -= 1
            return
        # Fresh messages each time: an outer middleware (CORS) may add to the headers.
        headers = list(random.choice(self._headers))
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": self._body})

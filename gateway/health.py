"""Liveness and readiness probes.

Readiness checks Kafka and Redis, but caches the answer for a second so a
fleet of probes cannot become load on either.
"""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.requests import Request
from starlette.responses import Response

from flashgate.redis_client import RedisFailure
from gateway.context import GatewayContext
from gateway.problems import json_response

log = logging.getLogger(__name__)

READY_CACHE_S = 1.0


class ReadinessProbe:
    def __init__(self, context: GatewayContext, cache_s: float = READY_CACHE_S) -> None:
        self._context = context
        self._cache_s = cache_s
        self._checked_at = float("-inf")
        self._result: dict[str, bool] = {}
        self.causes: dict[str, str] = {}
        self._lock = asyncio.Lock()

    async def check(self) -> dict[str, bool]:
        async with self._lock:
            if time.monotonic() - self._checked_at >= self._cache_s:
                producer = self._context.producer
                kafka = await asyncio.to_thread(producer.cluster_reachable, 1.0)
                # A refused connection can coexist with cached metadata: it decides.
                kafka = kafka and producer.refusal is None
                causes = {}
                if not kafka:
                    causes["kafka"] = producer.connection.cause or "no answer from Kafka"
                try:
                    redis = bool(await self._context.redis.ping())
                except (*RedisFailure, OSError) as exc:
                    # One line when Redis becomes unreachable (a wrong CA or password
                    # included), not one per probe.
                    if self._result.get("redis", True):
                        log.warning("Redis unreachable: %s", exc)
                    redis = False
                    causes["redis"] = type(exc).__name__
                self._result = {"kafka": kafka, "redis": redis}
                self.causes = causes
                self._checked_at = time.monotonic()
            return self._result


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    probe: ReadinessProbe = request.app.state.readiness
    checks = await probe.check()
    ready = all(checks.values())
    body: dict[str, object] = {"status": "ready" if ready else "unavailable", "checks": checks}
    if probe.causes:
        body["causes"] = probe.causes
    return json_response(body, status=200 if ready else 503)

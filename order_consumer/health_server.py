"""The consumer's small HTTP listener for probes and Prometheus (`[drain] health_port`).

    GET /healthz   200 while the drain loop polls, else 503   (liveness)
    GET /readyz    200 while alive and in the consumer group   (readiness)
    GET /metrics   the consumer's health and process metrics, and its counters
                   (flashgate_drain_delivered_total, _dead_lettered_total,
                   _fenced_total), Prometheus text

One request per connection, read with a deadline and a size cap: only probes
and a scraper call it. It runs on the drain's event loop, so an answer at all
also says the loop is not blocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Protocol

import msgspec
from prometheus_client import CollectorRegistry, Gauge, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from order_consumer.health import ConsumerHealth, Verdict
from order_consumer.worker import DrainCounters

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 5.0
REQUEST_HEAD_MAX_BYTES = 8 * 1024
_encoder = msgspec.json.Encoder()


class Dropping(Protocol):
    """What drops work after its retries, and counts it (the status writer)."""

    @property
    def dropped(self) -> int: ...


class _DrainCounts:
    """The worker's counters, read at scrape time (set once the worker exists)."""

    def __init__(self) -> None:
        self.counters: DrainCounters | None = None
        self.statuses: Dropping | None = None

    def collect(self) -> Iterator[Metric]:
        counters = self.counters or DrainCounters()
        yield CounterMetricFamily(
            "flashgate_drain_delivered", "Orders this consumer delivered",
            value=counters.delivered,
        )  # fmt: skip
        yield CounterMetricFamily(
            "flashgate_drain_dead_lettered", "Records this consumer dead-lettered",
            value=counters.dead_lettered,
        )  # fmt: skip
        yield CounterMetricFamily(
            "flashgate_drain_fenced",
            "Records fenced: written after their order was settled not stored (dead-lettered)",
            value=counters.fenced,
        )
        yield CounterMetricFamily(
            "flashgate_drain_status_writes_dropped",
            "Order statuses never written to Redis after their retries (the order itself was"
            " delivered or dead-lettered; only its status page lags)",
            value=self.statuses.dropped if self.statuses is not None else 0,
        )


class HealthMetrics:
    """Gauges read from `health` at scrape time, and the drain's counters, in a registry
    of their own."""

    def __init__(self, health: ConsumerHealth) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.drain = _DrainCounts()
        self.registry.register(self.drain)
        ready = Gauge(
            "flashgate_consumer_ready", "1 while in the group and polling", registry=self.registry
        )
        ready.set_function(lambda: float(health.ready().ok))
        poll_age = Gauge(
            "flashgate_consumer_poll_age_seconds",
            "Seconds since the drain loop last polled Kafka",
            registry=self.registry,
        )
        poll_age.set_function(lambda: health.alive().poll_age_s)
        assigned = Gauge(
            "flashgate_consumer_assigned_partitions",
            "Partitions of the orders topic this consumer owns",
            registry=self.registry,
        )
        assigned.set_function(lambda: float(health.alive().assigned))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _verdict_body(verdict: Verdict) -> bytes:
    return _encoder.encode(
        {
            "status": "ok" if verdict.ok else "unavailable",
            "reason": verdict.reason,
            "poll_age_s": round(verdict.poll_age_s, 3),
            "assigned_partitions": verdict.assigned,
        }
    )


class HealthServer:
    def __init__(self, health: ConsumerHealth, *, host: str, port: int) -> None:
        self._health = health
        self._metrics = HealthMetrics(health)
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    def count(self, counters: DrainCounters, statuses: Dropping | None = None) -> None:
        """Export these counters (the worker's, and its status writer's) on /metrics."""
        self._metrics.drain.counters = counters
        self._metrics.drain.statuses = statuses

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self._host, self._port, limit=REQUEST_HEAD_MAX_BYTES
        )
        log.info("health on http://%s:%d (/healthz, /readyz, /metrics)", self._host, self._port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def answer(self, method: str, path: str) -> tuple[int, str, bytes]:
        """Status, content type and body for one request."""
        if method not in ("GET", "HEAD"):
            return 405, "application/json", b'{"error":"method_not_allowed"}'
        if path == "/healthz":
            verdict = self._health.alive()
        elif path == "/readyz":
            verdict = self._health.ready()
        elif path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, self._metrics.render()
        else:
            return 404, "application/json", b'{"error":"not_found"}'
        return (200 if verdict.ok else 503), "application/json", _verdict_body(verdict)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            method, path, *_ = [*request_line.split(" "), "", ""]
            status, content_type, body = self.answer(method, path.split("?", 1)[0])
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}.get(
                status, "Service Unavailable"
            )
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            )
            if method != "HEAD":
                writer.write(body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass  # a client that sent no complete request head gets no answer
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

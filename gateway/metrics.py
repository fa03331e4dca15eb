"""Prometheus metrics of one gateway process, in its own registry (no globals).

- `flashgate_gateway_requests_total{route,status}`: answers by route and HTTP status
- `flashgate_admission_decisions_total{decision}`: why orders were accepted or refused
- `flashgate_gateway_produce_seconds`: produce-to-acknowledgement latency (histogram)
- `flashgate_gateway_in_flight`: requests being handled now
- `flashgate_gateway_shed_total{signal}`: public requests answered 503 by load shedding,
  by the signal that shed them (`lag`, `in_flight`)
- `flashgate_gateway_loop_lag_seconds`: how late the event loop's last tick ran
  (across workers: the worst); `flashgate_gateway_admitted_fraction`: the share of
  public requests the lag lets through (across workers: the lowest)
- `flashgate_admission_batch_size`: orders per admission call to Redis (histogram)
- `flashgate_gateway_redis_seconds{step}`: Redis time per batch (admit, settle)
- `flashgate_gateway_fenced_acks_total`: Kafka acknowledgements that came after the
  reaper had settled their order "not stored" (their record is fenced by the drain;
  needs clocks wrong by more than the reaper's slack: should stay 0)
- `flashgate_gateway_ready`: 1 when this replica's /readyz passes (Kafka and Redis reachable),
  so alerts count ready replicas without asking the proxy or the platform
- `flashgate_drain_*`: the drain group's state (`gateway.drain_metrics`)

The two per-request counters are plain dicts of ints exported by a collector at
scrape time: prometheus-client's counters take a lock on every increment, and
these run several times per order on the event loop's one thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.loop_lag import LoopLag
from gateway.shed_policy import ShedPolicy
from gateway.shedding import ShedCounts

PRODUCE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class _Counts:
    """Counters kept as plain ints (one event-loop thread writes them), read at scrape."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.decisions: dict[str, int] = {}
        # Read from the settler at scrape time (set once the lifespan built it).
        self.fenced_acks: Callable[[], int] = lambda: 0
        self.shed: ShedCounts | None = None

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "flashgate_gateway_requests",
            "HTTP answers by route and status",
            labels=["route", "status"],
        )
        for (route, status), count in sorted(self.requests.items()):
            requests.add_metric([route, str(status)], count)
        decisions = CounterMetricFamily(
            "flashgate_admission_decisions", "Admission decisions by reason", labels=["decision"]
        )
        for decision, count in sorted(self.decisions.items()):
            decisions.add_metric([decision], count)
        yield requests
        yield decisions
        if self.shed is not None:
            shed = CounterMetricFamily(
                "flashgate_gateway_shed",
                "Public requests answered 503 by load shedding, by signal",
                labels=["signal"],
            )
            shed.add_metric(["lag"], self.shed.lag)
            shed.add_metric(["in_flight"], self.shed.in_flight)
            yield shed
        yield CounterMetricFamily(
            "flashgate_gateway_fenced_acks",
            "Acknowledgements of orders already settled not stored",
            value=self.fenced_acks(),
        )


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._counts = _Counts()
        self.registry.register(self._counts)
        self.produce_seconds = Histogram(
            "flashgate_gateway_produce_seconds",
            "Time from produce to Kafka's acknowledgement",
            buckets=PRODUCE_BUCKETS_S,
            registry=self.registry,
        )
        self.in_flight = 0
        in_flight = Gauge(
            "flashgate_gateway_in_flight", "Requests being handled", registry=self.registry
        )
        in_flight.set_function(lambda: self.in_flight)
        self.batch_size = Histogram(
            "flashgate_admission_batch_size",
            "Orders per admission call to Redis",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        redis_seconds = Histogram(
            "flashgate_gateway_redis_seconds",
            "Redis round trip per batch, by step (admit, settle)",
            ["step"],
            buckets=PRODUCE_BUCKETS_S,
            registry=self.registry,
        )
        self.ready = 0.0
        ready = Gauge(
            "flashgate_gateway_ready",
            "1 when /readyz passes (Kafka and Redis reachable)",
            registry=self.registry,
        )
        ready.set_function(lambda: self.ready)
        self.admit_seconds = redis_seconds.labels("admit")
        self.settle_seconds = redis_seconds.labels("settle")

    def request(self, route: str, status: int) -> None:
        requests = self._counts.requests
        requests[route, status] = requests.get((route, status), 0) + 1

    def watch_shedding(self, counts: ShedCounts, lag: LoopLag, policy: ShedPolicy | None) -> None:
        self._counts.shed = counts
        Gauge(
            "flashgate_gateway_loop_lag_seconds",
            "How late the event loop's last tick ran",
            registry=self.registry,
        ).set_function(lambda: lag.last_s)
        Gauge(
            "flashgate_gateway_admitted_fraction",
            "Share of public requests the loop lag lets through (1 = no shedding)",
            registry=self.registry,
        ).set_function(lambda: 1.0 if policy is None else policy.fraction)

    def count_fenced_acks(self, read: Callable[[], int]) -> None:
        self._counts.fenced_acks = read

    def decision(self, decision: str) -> None:
        decisions = self._counts.decisions
        decisions[decision] = decisions.get(decision, 0) + 1

    def render(self) -> bytes:
        return generate_latest(self.registry)


def route_label(path: str) -> str:
    """A bounded label for a path (ids and junk paths must not explode the series)."""
    if path == "/v1/orders":
        return "/v1/orders"
    if path.startswith("/v1/orders/"):
        return "/v1/orders/{order_id}"
    if path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        return path
    return "other"


class MetricsMiddleware:
    """Count every answer by route and status, and track requests in flight."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight += 1
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight -= 1
            self.metrics.request(route_label(scope["path"]), status)


async def own_metrics(app: Starlette) -> bytes | None:
    """This process's metrics; None until its lifespan has built the clients."""
    state = app.state
    if not hasattr(state, "readiness"):
        return None
    metrics: GatewayMetrics = state.metrics
    # Both are read per scrape: the readiness probe caches its answer for a second,
    # and the drain's state is one HGETALL per scrape of each replica.
    metrics.ready = 1.0 if all((await state.readiness.check()).values()) else 0.0
    await state.drain_gauges.refresh(state.context.redis)
    return metrics.render()


async def metrics_endpoint(request: Request) -> Response:
    own = await own_metrics(request.app)
    if own is None:
        return Response(b"starting\n", status_code=503)
    # With several workers (gateway.main), one scrape answers for all of them.
    peers = getattr(request.app.state, "peer_metrics", None)
    body = own if peers is None else await peers.gather(own.decode())
    return Response(body, headers={"Content-Type": CONTENT_TYPE_LATEST})

"""The drain's state as gauges on the gateway's `/metrics`, read from Redis at scrape time.

Consumers have no HTTP port: they publish their progress to Redis
(`flashgate.drain.progress`), and every gateway replica exports the same
group-wide values, so alerts aggregate them with `max by (group)`.

- `flashgate_drain_backlog_orders{group}`: orders in Kafka not yet delivered
- `flashgate_drain_effective_rate_per_second{group}`: the rate the drain may use now (0 paused)
- `flashgate_drain_resume_rate_per_second{group}`: the rate without pause and adaptive
  back-off (schedule ceiling, or ops' override below it): what a resumed drain runs at
- `flashgate_drain_delivered_per_second{group}`: what the consumers deliver now
- `flashgate_drain_paused{group}`: 1 while ops hold the drain
- `flashgate_drain_paused_seconds{group}`: how long the current pause has lasted (only
  while paused): the orders waiting since before it are at least that old
- `flashgate_drain_consumers{group}`: consumers reporting in the last few seconds
- `flashgate_drain_retention_seconds{group}`: retention of the topic the group drains
  (from the settings, which create the topic and match the KafkaTopic on Kubernetes)
- `flashgate_drain_backend_refusing{group,status,message}`: 1 while the backend refuses
  every order (401, 403, 404..., a storm of one status; status 0 = TLS), with its answer;
  absent otherwise. The drain holds (nothing is dead-lettered for it) until someone acts.
- `flashgate_drain_headroom_seconds{group}`: retention minus the oldest undelivered
  order's projected age at delivery (`flashgate.drain.projection`); falls while paused
- `flashgate_drain_buffer_safety_seconds{group}`: the gateway's `buffer_safety_s`
- `flashgate_drain_oldest_order_age_seconds{group}`: age of the oldest undelivered order
- `flashgate_drain_admitted_delivery_seconds{group}`: when an order admitted now would be
  delivered (absent while the projection says never)
- `flashgate_drain_lost_orders_total{group}`: accepted orders Kafka deleted before
  delivery (order_consumer/loss_watch.py); should stay 0

No sample is exported while Redis cannot be read: a stale backlog would keep an
alert quiet, and the gateway's own readiness already reports Redis down.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from redis.asyncio import Redis
from redis.exceptions import RedisError

from flashgate.drain import outlook, progress
from flashgate.settings import Settings

REFUSAL_LABEL_MAX_CHARS = 120


class DrainGauges:
    """A prometheus-client collector refreshed by `refresh()` before each scrape renders."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._group = settings.drain.group_id
        self._configured_rate = settings.drain.rate_per_s
        self._retention_s = settings.kafka.retention_ms / 1000
        self._values: dict[str, float] = {}
        self._refusal: progress.BackendRefusal | None = None
        self._lost: float | None = None

    async def refresh(self, redis: Redis) -> None:
        try:
            seen = await outlook.read(redis, self._settings)
        except (RedisError, OSError):
            self._values = {}
            self._refusal = None
            self._lost = None
            return
        override, state, projection = seen.override, seen.progress, seen.projection
        self._refusal = state.backend_refusal if state is not None else None
        reporting = state is not None and state.consumers > 0
        configured = self._configured_rate
        if state is not None and state.configured_rate is not None:
            configured = state.configured_rate
        resume = configured if override.rate is None else min(configured, override.rate)
        if state is not None and reporting:
            effective = state.effective_rate
        else:
            effective = 0.0 if override.paused else resume
        self._values = {
            "flashgate_drain_backlog_orders": float(state.backlog if state is not None else 0),
            "flashgate_drain_effective_rate_per_second": effective,
            "flashgate_drain_resume_rate_per_second": resume,
            "flashgate_drain_delivered_per_second": state.delivered_per_second
            if state is not None
            else 0.0,
            "flashgate_drain_paused": 1.0 if override.paused else 0.0,
            "flashgate_drain_consumers": float(state.consumers if state is not None else 0),
            "flashgate_drain_retention_seconds": self._retention_s,
            "flashgate_drain_headroom_seconds": projection.headroom_s,
            "flashgate_drain_buffer_safety_seconds": float(self._settings.gateway.buffer_safety_s),
            "flashgate_drain_oldest_order_age_seconds": projection.oldest_age_s,
        }
        if projection.admitted_delivered_in_s is not None:
            delivery = projection.admitted_delivered_in_s
            self._values["flashgate_drain_admitted_delivery_seconds"] = delivery
        self._lost = float(seen.losses.total)
        if override.paused_at is not None:
            paused_s = max(0.0, time.time() - override.paused_at)
            self._values["flashgate_drain_paused_seconds"] = paused_s

    def collect(self) -> Iterator[Metric]:
        if self._values and self._refusal is not None:
            refusing = GaugeMetricFamily(
                "flashgate_drain_backend_refusing",
                "1 while the backend refuses every order (the drain holds)",
                labels=["group", "status", "message"],
            )
            message = self._refusal.message[:REFUSAL_LABEL_MAX_CHARS]
            refusing.add_metric([self._group, str(self._refusal.status), message], 1.0)
            yield refusing
        for name, value in self._values.items():
            if math.isfinite(value):
                gauge = GaugeMetricFamily(name, _HELP[name], labels=["group"])
                gauge.add_metric([self._group], value)
                yield gauge
        if self._lost is not None:
            lost = CounterMetricFamily(
                "flashgate_drain_lost_orders",
                "Accepted orders Kafka deleted before the drain delivered them",
                labels=["group"],
            )
            lost.add_metric([self._group], self._lost)
            yield lost


_HELP = {
    "flashgate_drain_backlog_orders": "Orders in Kafka not yet delivered to the backend",
    "flashgate_drain_effective_rate_per_second": "Orders/s the drain may deliver now (0 paused)",
    "flashgate_drain_resume_rate_per_second": "Orders/s without pause and adaptive back-off",
    "flashgate_drain_delivered_per_second": "Orders/s the consumers deliver now",
    "flashgate_drain_paused": "1 while ops hold the drain",
    "flashgate_drain_paused_seconds": "How long the current pause has lasted",
    "flashgate_drain_consumers": "Consumers that reported in the last few seconds",
    "flashgate_drain_retention_seconds": "Retention of the orders topic the group drains",
    "flashgate_drain_headroom_seconds": "Retention minus the oldest order's age at delivery",
    "flashgate_drain_buffer_safety_seconds": "Headroom below which admission refuses orders",
    "flashgate_drain_oldest_order_age_seconds": "Age of the oldest undelivered order",
    "flashgate_drain_admitted_delivery_seconds": "When an order admitted now would be delivered",
}

"""Backlog-aware admission: refuse an order the drain would deliver after Kafka deletes it.

Before anything is reserved, `POST /v1/orders` asks `BacklogGuard.check`. The
projection (`flashgate.drain.projection`, read through `flashgate.drain.outlook`)
is computed at most once a second for all gateways: the first gateway to find the
shared copy in Redis (`{drain:<group>}:projection`) older than a second computes it
and writes it back; the others read it. Each gateway keeps its copy for a second,
so no request computes or reads anything on its own.

An order admitted now is refused (503 `backlog_full`) when its projected delivery
is later than the limit: retention minus `[gateway] buffer_safety_s`, or the sale's
own `deliver_within_s` when smaller. `Retry-After` is the time until an order
admitted then would fit, from the schedule ahead (`seconds_until_fits`). While the
drain is paused, the delivery counted is the one if ops resumed now (a pause is
what the buffer is for; the guard closes once even an immediate resume would be
too late, and stays closed, Retry-After `PAUSED_RETRY_AFTER_S`, until it reopens).
A sale with `on_backlog_full = "accept"` keeps accepting; each such order is
counted (`backlog_full_accepted`) and the headroom alerts tell ops.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from flashgate.admission.keys import SaleKeys
from flashgate.drain import outlook
from flashgate.drain.keys import projection_key
from flashgate.drain.projection import Projection, RateInputs, drain_seconds, seconds_until_fits
from flashgate.redis_client import RedisClient, RedisFailure, as_text
from flashgate.settings import Settings

REFRESH_S = 1.0
SHARED_TTL_MS = 10_000
PAUSED_RETRY_AFTER_S = 60
# Sale policies cached at once (a flood of made-up sale ids must not grow memory).
POLICIES_MAX = 10_000
ON_FULL_REFUSE = "refuse"
ON_FULL_ACCEPT = "accept"

log = logging.getLogger(__name__)


class SharedProjection(msgspec.Struct, frozen=True):
    """What one gateway computed for all: the projection, and the delivery of an order
    admitted now if a paused drain resumed now (None: not even then)."""

    projection: Projection
    resumed_delivered_in_s: float | None
    paused: bool


@dataclass(frozen=True, slots=True)
class SalePolicy:
    deliver_within_s: float | None
    on_full: str


@dataclass(frozen=True, slots=True)
class BacklogFull:
    """The guard's refusal (or, for an `accept` sale, its warning)."""

    delivered_in_s: float | None
    limit_s: float
    retry_after_s: int
    refuse: bool
    # When the projection this answer comes from was computed (unix seconds).
    projected_at: float


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(SharedProjection)


class BacklogGuard:
    def __init__(
        self, redis: RedisClient, settings: Settings, clock: Callable[[], float] = time.time
    ) -> None:
        self._redis = redis
        self._settings = settings
        self._clock = clock
        self._key = projection_key(settings.drain.group_id)
        self._retention_s = settings.kafka.retention_ms / 1000
        self._limit_s = self._retention_s - settings.gateway.buffer_safety_s
        if self._limit_s <= 0:
            log.warning(
                "[gateway] buffer_safety_s (%d s) is not below the retention (%g s): every "
                "order of a sale with on_backlog_full = refuse is refused",
                settings.gateway.buffer_safety_s, self._retention_s,
            )  # fmt: skip
        self._shared: SharedProjection | None = None
        self._fetched_at = -math.inf
        self._refreshing: asyncio.Task[None] | None = None
        self._policies: dict[str, tuple[float, SalePolicy]] = {}
        self._policy_reads: dict[str, asyncio.Task[SalePolicy]] = {}

    async def check(self, sale_id: str) -> BacklogFull | None:
        """None when an order of this sale admitted now would be delivered in time."""
        shared = await self._current()
        if shared is None:
            return None  # nothing known yet (Redis away: admission answers that itself)
        policy = await self._policy(sale_id)
        limit = self._limit_s
        if policy.deliver_within_s is not None:
            limit = min(limit, policy.deliver_within_s)
        projection = shared.projection
        delivered = projection.admitted_delivered_in_s
        if delivered is None and shared.paused:
            delivered = shared.resumed_delivered_in_s
        if delivered is not None and delivered <= limit:
            return None
        if shared.paused or delivered is None:
            retry = PAUSED_RETRY_AFTER_S
        else:
            waiting = seconds_until_fits(projection, limit)
            retry = PAUSED_RETRY_AFTER_S if waiting is None else max(1, math.ceil(waiting))
        refuse = policy.on_full != ON_FULL_ACCEPT
        return BacklogFull(delivered, limit, retry, refuse, projection.computed_at)

    async def _current(self) -> SharedProjection | None:
        now = time.monotonic()
        if now - self._fetched_at >= REFRESH_S and self._refreshing is None:
            self._refreshing = asyncio.create_task(self._refresh())
        if self._shared is None and self._refreshing is not None:
            await asyncio.shield(self._refreshing)
        return self._shared

    async def _refresh(self) -> None:
        try:
            raw = await self._redis.get(self._key)
            shared = _decoder.decode(raw) if raw else None
            now = self._clock()
            if shared is None or now - shared.projection.computed_at >= REFRESH_S:
                shared = await self._compute(now)
                await self._redis.set(self._key, _encoder.encode(shared), px=SHARED_TTL_MS)
            self._shared = shared
        except (*RedisFailure, msgspec.DecodeError) as exc:
            log.warning("backlog projection not refreshed: %s", exc)
        finally:
            self._fetched_at = time.monotonic()
            self._refreshing = None

    async def _compute(self, now: float) -> SharedProjection:
        seen = await outlook.read(self._redis, self._settings, now)
        projection = seen.projection
        resumed = None
        if seen.override.paused:
            running = RateInputs(
                override_rate=seen.override.rate, adaptive_rate=seen.inputs.adaptive_rate
            )
            resumed = drain_seconds(projection.backlog + 1, now, seen.schedule, running)
        return SharedProjection(projection, resumed, seen.override.paused)

    async def _policy(self, sale_id: str) -> SalePolicy:
        """The sale's guard settings, read at most once a second per sale and gateway.

        One read at a time per sale: a crowd arriving at once (or when the cached value
        turns a second old) must not send one Redis call per request, which would take
        every pooled connection from the admissions themselves."""
        cached = self._policies.get(sale_id)
        if cached is not None and time.monotonic() - cached[0] < REFRESH_S:
            return cached[1]
        reading = self._policy_reads.get(sale_id)
        if reading is None:
            reading = asyncio.create_task(self._read_policy(sale_id, cached))
            self._policy_reads[sale_id] = reading
            reading.add_done_callback(lambda _done: self._policy_reads.pop(sale_id, None))
        if cached is not None:
            return cached[1]  # a second old at most, while the read is on its way
        return await asyncio.shield(reading)

    async def _read_policy(
        self, sale_id: str, cached: tuple[float, SalePolicy] | None
    ) -> SalePolicy:
        try:
            within, on_full = await self._redis.hmget(
                SaleKeys.of(sale_id).config, ["deliver_within_s", "on_backlog_full"]
            )
        except RedisFailure:
            return cached[1] if cached else SalePolicy(None, ON_FULL_REFUSE)
        seconds = float(as_text(within)) if within else 0.0
        policy = SalePolicy(
            deliver_within_s=seconds if seconds > 0 else None,
            on_full=as_text(on_full) if on_full else ON_FULL_REFUSE,
        )
        if len(self._policies) >= POLICIES_MAX:
            self._policies.clear()
        self._policies[sale_id] = (time.monotonic(), policy)
        return policy

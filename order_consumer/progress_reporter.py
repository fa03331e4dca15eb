"""Publish this consumer's progress: offsets done and end offsets per partition, rate, reason.

The gateway answers `position` / `eta_seconds` and ops see the ETA to empty
from what every consumer writes here (`flashgate.drain.progress`), every
`progress_interval_ms` (twice a second by default).

The offset published per partition is the one this consumer would commit now
(everything below it delivered or dead-lettered): at most a second ahead of
the committed offset, and never behind the truth.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from flashgate.drain import progress
from flashgate.redis_client import RedisClient
from flashgate.settings import DrainSettings
from order_consumer.head_times import HeadTimes
from order_consumer.kafka_source import EndOffsets
from order_consumer.offsets import OffsetTracker
from order_consumer.rate_policy import RateDecision

METER_WINDOW_S = 2.0


class DeliveryMeter:
    """Deliveries per second over the last `window_s` seconds."""

    def __init__(
        self, window_s: float = METER_WINDOW_S, clock: Callable[[], float] = time.monotonic
    ):
        self._window_s = window_s
        self._clock = clock
        self._marks: deque[tuple[float, int]] = deque()
        self.total = 0
        self._started = clock()

    def add(self, count: int = 1) -> None:
        self.total += count

    def rate(self) -> float:
        now = self._clock()
        self._marks.append((now, self.total))
        while len(self._marks) > 1 and now - self._marks[0][0] > self._window_s:
            self._marks.popleft()
        first_at, first_total = self._marks[0]
        span = now - first_at
        if span <= 0:
            return 0.0
        return (self.total - first_total) / span


@dataclass(slots=True)
class Snapshot:
    """What the worker knows besides offsets."""

    decision: RateDecision
    delivered_per_second: float
    backend: str
    in_flight: int
    delivered_total: int
    dead_lettered_total: int
    fenced_total: int = 0
    # Set while the backend refuses every order (the gate's refusal).
    refusal_status: int | None = None
    refusal: str = ""


class ProgressReporter:
    def __init__(
        self,
        redis: RedisClient,
        group_id: str,
        consumer_id: str,
        end_offsets: EndOffsets,
        tracker: OffsetTracker,
        head_times: HeadTimes | None = None,
        drain: Callable[[], DrainSettings] | None = None,
    ) -> None:
        self._redis = redis
        self._group_id = group_id
        self.consumer_id = consumer_id
        self._end_offsets = end_offsets
        self._tracker = tracker
        self._head_times = head_times
        self._drain = drain

    async def publish(self, snapshot: Snapshot) -> None:
        owned = sorted(self._tracker.partitions)
        ends = await self._end_offsets.get(owned)
        partitions: dict[int, tuple[int, int]] = {}
        for partition in owned:
            offsets = self._tracker.partitions.get(partition)
            end = ends.get(partition)
            if offsets is None or end is None:
                continue
            done = offsets.watermark()
            # Nothing read and nothing committed yet: all of the partition is still to come.
            partitions[partition] = (min(done, end) if done is not None else 0, end)
        oldest: dict[int, float] = {}
        if self._head_times is not None:
            waiting = {p: done for p, (done, end) in partitions.items() if done < end}
            oldest = await self._head_times.get(waiting)
        drain = self._drain() if self._drain is not None else None
        decision = snapshot.decision
        report = progress.ConsumerReport(
            consumer_id=self.consumer_id,
            configured_rate=decision.configured_rate,
            override_rate=decision.override_rate,
            effective_rate=decision.effective_rate,
            paused=decision.paused,
            reason=decision.reason,
            schedule=decision.schedule,
            delivered_per_second=snapshot.delivered_per_second,
            updated_at=time.time(),
            adaptive_rate=decision.adaptive_rate,
            backend=snapshot.backend,
            in_flight=snapshot.in_flight,
            delivered_total=snapshot.delivered_total,
            dead_lettered_total=snapshot.dead_lettered_total,
            fenced_total=snapshot.fenced_total,
            refusal_status=snapshot.refusal_status,
            refusal=snapshot.refusal,
            windows=list(drain.schedule) if drain is not None else [],
            timezone=drain.timezone if drain is not None else "UTC",
            rate_per_s=drain.rate_per_s if drain is not None else None,
        )
        await progress.publish(self._redis, self._group_id, report, partitions, oldest)

    async def withdraw(self) -> None:
        await progress.withdraw(self._redis, self._group_id, self.consumer_id)

"""Whether this consumer is alive and ready, judged from the outside of the drain loop.

- alive: the drain loop keeps polling Kafka. It polls at least every few seconds,
  also while partitions are paused or every slot is busy (that is how it stays in
  its group), and a rebalance holds one poll for at most the revoke wait or the
  committed-offsets lookup of an assign. No poll for `stuck_after_s` means the
  loop is stuck: a restart is the remedy.
- ready: alive, and a member of the consumer group: an assignment (possibly empty,
  with more consumers than partitions) came since start or since the last time
  the group took our partitions away as lost.

The worker is not changed for this: `WatchedSource` is its Kafka source with the
polls counted, and `watch()` wraps the worker's rebalance callbacks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Message

from order_consumer.kafka_source import KafkaSource, RebalanceHandler

Clock = Callable[[], float]


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str
    poll_age_s: float
    assigned: int


class ConsumerHealth:
    def __init__(self, *, stuck_after_s: float, clock: Clock = time.monotonic) -> None:
        self._stuck_after_s = stuck_after_s
        self._clock = clock
        # Until the first poll, the loop is judged from start-up.
        self._last_poll = clock()
        self._in_group = False
        self._assigned: set[int] = set()

    def polled(self) -> None:
        self._last_poll = self._clock()

    def assigned(self, partitions: list[int]) -> None:
        self._in_group = True
        self._assigned.update(partitions)

    def revoked(self, partitions: list[int]) -> None:
        # Still a member: revoking is how the group hands partitions over.
        self._assigned.difference_update(partitions)

    def lost(self, partitions: list[int]) -> None:
        # The group went on without us (session or poll interval expired).
        self._assigned.difference_update(partitions)
        self._in_group = False

    def alive(self) -> Verdict:
        age = self._clock() - self._last_poll
        if age > self._stuck_after_s:
            return self._verdict(False, f"no poll of Kafka for {age:.0f} s")
        return self._verdict(True, "polling")

    def ready(self) -> Verdict:
        alive = self.alive()
        if not alive.ok:
            return alive
        if not self._in_group:
            return self._verdict(False, "not a member of the consumer group yet")
        return self._verdict(True, f"in the group with {len(self._assigned)} partitions")

    def _verdict(self, ok: bool, reason: str) -> Verdict:
        return Verdict(ok, reason, self._clock() - self._last_poll, len(self._assigned))

    def watch(self, handler: RebalanceHandler) -> RebalanceHandler:
        """`handler`'s rebalance callbacks, seen by this health on their way."""
        return _WatchedHandler(handler, self)


class _WatchedHandler:
    def __init__(self, inner: RebalanceHandler, health: ConsumerHealth) -> None:
        self._inner = inner
        self._health = health

    async def partitions_assigned(self, starts: dict[int, int | None]) -> None:
        await self._inner.partitions_assigned(starts)
        self._health.assigned(list(starts))

    async def partitions_revoked(self, partitions: list[int]) -> dict[int, int]:
        done = await self._inner.partitions_revoked(partitions)
        self._health.revoked(partitions)
        return done

    async def partitions_lost(self, partitions: list[int]) -> None:
        await self._inner.partitions_lost(partitions)
        self._health.lost(partitions)


class WatchedSource(KafkaSource):
    """The drain's Kafka source, telling `health` of every poll and rebalance."""

    def __init__(
        self,
        config: dict[str, Any],
        topic: str,
        handler: RebalanceHandler,
        *,
        revoke_timeout_s: float,
        health: ConsumerHealth,
    ) -> None:
        super().__init__(config, topic, health.watch(handler), revoke_timeout_s=revoke_timeout_s)
        self._health = health

    async def poll(self, max_messages: int, timeout_s: float) -> list[Message]:
        messages = await super().poll(max_messages, timeout_s)
        self._health.polled()
        return messages

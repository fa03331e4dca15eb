"""Loss made loud: a consumer whose position fell behind a partition's log start says so.

Kafka deletes records by age whether or not they were delivered. When the drain's
next offset of a partition was deleted, librdkafka resumes at the earliest record
(`auto.offset.reset = earliest`; never `latest`) and the first record polled comes
after a gap. The worker hands every polled offset to `observe` with the offset it
expected; a gap is checked against the partition's log start offset and the
deleted range [expected, min(first polled, log start)) is recorded in Redis
(`flashgate.drain.losses`, counted once), logged at ERROR with its exact offsets,
and its orders still waiting are marked `failed`, reason `expired_in_buffer`. The
drain goes on from the earliest record: nothing is skipped silently.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec  # not re-exported for mypy

from flashgate.drain.losses import LossBook

log = logging.getLogger(__name__)

LOG_START_TIMEOUT_S = 5.0
RETRY_S = 1.0
MAX_ATTEMPTS = 60


class LogStarts:
    """Log start offsets (the earliest offset Kafka still holds) of the orders topic."""

    def __init__(self, config: dict[str, Any], topic: str) -> None:
        self._admin = AdminClient(config)
        self._topic = topic

    async def get(self, partition: int) -> int:
        earliest = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
        futures = self._admin.list_offsets(
            {TopicPartition(self._topic, partition): earliest}, request_timeout=LOG_START_TIMEOUT_S
        )
        (future,) = futures.values()
        result = await asyncio.wrap_future(future)
        return int(result.offset)


class LossWatch:
    """Turns gaps in the polled offsets into recorded, logged, shopper-visible losses."""

    def __init__(self, book: LossBook, log_starts: LogStarts, topic: str) -> None:
        self._book = book
        self._log_starts = log_starts
        self._topic = topic
        self._gaps: asyncio.Queue[tuple[int, int, int]] = asyncio.Queue()
        self.lost_total = 0

    def observe(self, partition: int, expected: int | None, polled: int) -> None:
        """A record at `polled` came where `expected` was next (None: nothing known)."""
        if expected is not None and polled > expected:
            self._gaps.put_nowait((partition, expected, polled))

    async def run(self) -> None:
        while True:
            partition, expected, polled = await self._gaps.get()
            for attempt in range(1, MAX_ATTEMPTS + 1):
                try:
                    await self._settle(partition, expected, polled)
                    break
                except Exception as exc:  # Kafka or Redis away: retry
                    if attempt == MAX_ATTEMPTS:
                        # Still loud, so that a later gap is not held up behind this one.
                        log.error(
                            "%s[%d]: offsets %d-%d were skipped and could not be checked or "
                            "recorded: %r", self._topic, partition, expected, polled - 1, exc,
                        )  # fmt: skip
                    else:
                        log.warning("skipped offsets of partition %d not recorded yet: %r",
                                    partition, exc)  # fmt: skip
                        await asyncio.sleep(RETRY_S)

    async def _settle(self, partition: int, expected: int, polled: int) -> None:
        start = await self._log_starts.get(partition)
        end = min(polled, start)
        if end <= expected:
            log.warning(
                "%s[%d]: offsets %d-%d skipped but not deleted by retention (log start %d)",
                self._topic, partition, expected, polled - 1, start,
            )  # fmt: skip
            return
        lost = await self._book.record(self._topic, partition, expected, end)
        if lost is None:
            return  # counted already (seen before a rebalance)
        self.lost_total += lost.count
        log.error(
            "%s[%d]: %d accepted orders deleted by retention before delivery: offsets %d-%d "
            "(the drain resumes at %d)",
            self._topic, partition, lost.count, lost.first, lost.end - 1, polled,
        )  # fmt: skip
        marked = await self._book.mark_expired(lost)
        log.error("%s[%d]: %d orders marked failed (expired_in_buffer): %s", self._topic,
                  partition, len(marked), ", ".join(marked[:20]))  # fmt: skip

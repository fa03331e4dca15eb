"""How old the oldest undelivered order of each partition is: the create time of the
record at the drain's position, read by a consumer of its own (outside the group).

The projection (`flashgate.drain.projection`) needs it for the retention headroom.
The drain's own consumer is not used: its one thread lives inside `consume()`. A
partition's time is read again only when its position moved and `REFRESH_S` has
passed; in between the older time is kept, which errs on the side of less headroom.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

REFRESH_S = 2.0
READ_TIMEOUT_S = 1.0
LEAN_FETCH = {
    "max.partition.fetch.bytes": 64 * 1024,
    "fetch.max.bytes": 1024 * 1024,
    "queued.min.messages": 1,
    "queued.max.messages.kbytes": 1024,
    "enable.partition.eof": False,
}


class HeadTimes:
    def __init__(self, config: dict[str, Any], topic: str) -> None:
        # One record per partition is all it wants: small fetches, no prefetching.
        self._consumer = Consumer(config | LEAN_FETCH)
        self._topic = topic
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="head-times")
        # partition -> (offset read, its create time in unix seconds, when read)
        self._known: dict[int, tuple[int, float, float]] = {}

    async def get(self, positions: dict[int, int]) -> dict[int, float]:
        """Create time of the record at each position (partitions with a backlog)."""
        now = time.monotonic()
        stale = {
            p: offset
            for p, offset in positions.items()
            if p not in self._known
            or (self._known[p][0] != offset and now - self._known[p][2] >= REFRESH_S)
        }
        if stale:
            read = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._read, stale
            )
            for partition, created in read.items():
                self._known[partition] = (stale[partition], created, now)
        return {p: self._known[p][1] for p in positions if p in self._known}

    def _read(self, positions: dict[int, int]) -> dict[int, float]:
        found: dict[int, float] = {}
        try:
            self._consumer.assign([TopicPartition(self._topic, p, o) for p, o in positions.items()])
            deadline = time.monotonic() + READ_TIMEOUT_S
            while len(found) < len(positions) and time.monotonic() < deadline:
                for message in self._consumer.consume(len(positions), 0.2):
                    partition = message.partition()
                    if message.error() is None and partition is not None and partition not in found:
                        _, millis = message.timestamp()
                        found[partition] = millis / 1000
            self._consumer.unassign()
        except KafkaException:
            return found
        return found

    def close(self) -> None:
        self._executor.submit(self._consumer.close).result()
        self._executor.shutdown(wait=True)

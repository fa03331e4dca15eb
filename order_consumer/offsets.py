"""Which offset may be committed: per partition, the first offset not yet done.

Orders of one partition finish out of order (concurrent deliveries); the
offset stored for commit is always the lowest one still undelivered (or the
next to fetch when none is pending), so a crash at any moment redelivers,
never skips. One `PartitionOffsets` lives for one assignment of a partition:
a delivery that finishes after its partition was revoked marks an object no
one reads any more, and cannot move the new owner's offsets.
"""

from __future__ import annotations

from collections import deque


class PartitionOffsets:
    def __init__(self, partition: int, start: int | None) -> None:
        self.partition = partition
        self.revoked = False
        self.next_fetch = start
        """The offset after the last one handed out (None: nothing known yet)."""
        self._pending: deque[int] = deque()
        self._done: set[int] = set()
        self._stored: int | None = None

    def add(self, offset: int) -> bool:
        """Track a polled record; False if it was seen already (a seek went back)."""
        if self.next_fetch is not None and offset < self.next_fetch:
            return False
        self._pending.append(offset)
        self.next_fetch = offset + 1
        return True

    def done(self, offset: int) -> None:
        """The record was delivered or dead-lettered."""
        if self.revoked:
            return
        self._done.add(offset)
        pending, done = self._pending, self._done
        while pending and pending[0] in done:
            done.discard(pending.popleft())

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def watermark(self) -> int | None:
        """The offset to commit: everything below it is done."""
        return self._pending[0] if self._pending else self.next_fetch

    def take_storable(self) -> int | None:
        """The watermark if it moved since the last call, else None."""
        watermark = self.watermark()
        if watermark is None or watermark == self._stored:
            return None
        self._stored = watermark
        return watermark


class OffsetTracker:
    """The partitions this consumer owns now, each with its offsets."""

    def __init__(self) -> None:
        self.partitions: dict[int, PartitionOffsets] = {}

    def assign(self, partition: int, start: int | None) -> PartitionOffsets:
        offsets = PartitionOffsets(partition, start)
        self.partitions[partition] = offsets
        return offsets

    def revoke(self, partition: int) -> PartitionOffsets | None:
        offsets = self.partitions.pop(partition, None)
        if offsets is not None:
            offsets.revoked = True
        return offsets

    def storable(self) -> dict[int, int]:
        result = {}
        for partition, offsets in self.partitions.items():
            watermark = offsets.take_storable()
            if watermark is not None:
                result[partition] = watermark
        return result

    @property
    def in_flight(self) -> int:
        return sum(offsets.in_flight for offsets in self.partitions.values())

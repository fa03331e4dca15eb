"""Per-partition offsets: the stored offset never passes an undelivered record."""

from __future__ import annotations

from order_consumer.offsets import OffsetTracker


def test_watermark_waits_for_the_lowest_pending_offset() -> None:
    tracker = OffsetTracker()
    p0 = tracker.assign(0, 10)
    assert p0.watermark() == 10
    for offset in (10, 11, 12, 14):  # 13 is a gap (a transaction marker, say)
        assert p0.add(offset)
    p0.done(12)
    p0.done(11)
    assert tracker.storable() == {0: 10}
    assert tracker.storable() == {}  # unchanged: nothing to store again
    p0.done(10)
    assert tracker.storable() == {0: 14}
    p0.done(14)
    assert tracker.storable() == {0: 15}
    assert tracker.in_flight == 0


def test_records_seen_again_after_a_seek_are_ignored() -> None:
    p = OffsetTracker().assign(3, None)
    assert p.watermark() is None
    assert p.add(5) and p.add(6)
    assert not p.add(5)
    assert p.next_fetch == 7


def test_a_revoked_assignment_no_longer_moves() -> None:
    tracker = OffsetTracker()
    old = tracker.assign(1, 0)
    old.add(0)
    tracker.revoke(1)
    new = tracker.assign(1, 0)
    old.done(0)
    assert old.in_flight == 1
    assert new.watermark() == 0
    assert tracker.storable() == {1: 0}

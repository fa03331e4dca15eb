"""The loss watch's decisions (order_consumer/loss_watch.py), with fakes for Kafka's log
start and the Redis book: pure logic. The real thing runs in tests/test_buffer_loss.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from flashgate.drain.losses import LostRange
from order_consumer.loss_watch import LossWatch


class FakeStarts:
    def __init__(self, starts: dict[int, int]) -> None:
        self.starts = starts

    async def get(self, partition: int) -> int:
        return self.starts[partition]


class FakeBook:
    def __init__(self) -> None:
        self.recorded: list[tuple[int, int, int]] = []

    async def record(self, topic: str, partition: int, first: int, end: int) -> LostRange | None:
        self.recorded.append((partition, first, end))
        return LostRange(topic, partition, first, end, 0.0)

    async def mark_expired(self, lost: LostRange) -> list[str]:
        return [f"order-{offset}" for offset in range(lost.first, lost.end)]


def run_watch(starts: dict[int, int], gaps: list[tuple[int, int | None, int]]) -> FakeBook:
    book = FakeBook()
    watch = LossWatch(book, FakeStarts(starts), "orders")  # type: ignore[arg-type]

    async def scenario() -> None:
        task = asyncio.create_task(watch.run())
        for gap in gaps:
            watch.observe(*gap)
        for _ in range(50):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    return book


def test_a_gap_behind_the_log_start_is_recorded_exactly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        book = run_watch({3: 120}, [(3, 100, 120)])
    assert book.recorded == [(3, 100, 120)]
    assert "20 accepted orders deleted by retention before delivery: offsets 100-119" in caplog.text
    assert "order-100" in caplog.text


def test_the_range_stops_at_the_first_record_polled() -> None:
    # Deleted further since the reset: what was polled bounds what was lost.
    assert run_watch({0: 150}, [(0, 100, 120)]).recorded == [(0, 100, 120)]


def test_no_gap_or_nothing_known_records_nothing() -> None:
    assert run_watch({0: 500}, [(0, 7, 7), (0, None, 500)]).recorded == []


def test_a_gap_retention_did_not_make_is_logged_not_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        book = run_watch({1: 0}, [(1, 10, 15)])
    assert book.recorded == []
    assert "offsets 10-14 skipped but not deleted by retention" in caplog.text

"""The per-process token bucket: burst, then the rate, measured on an injected clock."""

from __future__ import annotations

import asyncio

import pytest

from order_consumer.local_limiter import TokenBucket


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_burst_then_rate() -> None:
    fake = FakeTime()
    bucket = TokenBucket(100.0, 10, clock=fake.clock, sleep=fake.sleep)

    async def take(n: int) -> None:
        for _ in range(n):
            await bucket.acquire()

    asyncio.run(take(10))
    assert fake.now == 0.0
    asyncio.run(take(100))
    assert fake.now == pytest.approx(1.0)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0, 1)
    bucket = TokenBucket(1, 2)
    with pytest.raises(ValueError):
        asyncio.run(bucket.acquire(3))

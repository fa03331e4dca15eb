"""The group's drain limiter on a real Redis: the Lua bucket, then two replicas sharing it."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from flashgate.drain.keys import limiter_key
from flashgate.redis_client import create_redis
from flashgate.redis_scripts.loader import RedisScripts
from flashgate.settings import RedisSettings
from order_consumer.group_limiter import RATE_HOLD_S, SCRIPT, GroupLimiter

S = 1_000_000  # microseconds


async def _take(
    scripts: RedisScripts, key: str, rate: float, burst: int, want: int, now_us: int,
    most: int | None = None,
) -> tuple[int, int, float]:  # fmt: skip
    args = [repr(rate), str(burst), str(want), str(now_us), str(int(RATE_HOLD_S * S)), "60000",
            str(most or want)]  # fmt: skip
    granted, wait_us, in_force = await scripts.call(SCRIPT, [key], args)
    return int(granted), int(wait_us), float(in_force)


def test_bucket_burst_then_rate_with_an_injected_clock(any_redis: RedisSettings) -> None:
    async def scenario() -> None:
        redis = create_redis(any_redis)
        scripts = RedisScripts(redis, [SCRIPT])
        key = limiter_key(f"g-{uuid.uuid4().hex[:6]}")
        t0 = 1_700_000_000 * S
        try:
            assert await _take(scripts, key, 100, 20, 20, t0) == (20, 0, 100)
            granted, wait_us, _ = await _take(scripts, key, 100, 20, 5, t0)
            assert (granted, wait_us) == (0, 50_000)  # 5 tokens at 100/s: 50 ms
            assert (await _take(scripts, key, 100, 20, 5, t0 + 50_000))[0] == 5
            # At least `want`: 4.9 tokens are not 5.
            assert (await _take(scripts, key, 100, 20, 5, t0 + 99_000))[0] == 0
            # A late caller takes what accrued (12.9 tokens), up to `most`.
            assert (await _take(scripts, key, 100, 20, 5, t0 + 179_000, most=15))[0] == 12
            # Idle for long: the bucket holds at most the burst.
            assert (await _take(scripts, key, 100, 20, 20, t0 + 60 * S))[0] == 20
            assert (await _take(scripts, key, 100, 20, 1, t0 + 60 * S))[0] == 0
        finally:
            await redis.aclose()

    asyncio.run(scenario())


def test_lowest_recent_rate_is_in_force_for_the_whole_group(any_redis: RedisSettings) -> None:
    async def scenario() -> None:
        redis = create_redis(any_redis)
        scripts = RedisScripts(redis, [SCRIPT])
        key = limiter_key(f"g-{uuid.uuid4().hex[:6]}")
        t0 = 1_700_000_000 * S
        try:
            await _take(scripts, key, 1000, 10, 10, t0)
            # One replica backs off to 10/s; another still asks for 1000/s: 10/s holds.
            assert (await _take(scripts, key, 10, 10, 1, t0 + 1000))[2] == 10
            granted, wait_us, in_force = await _take(scripts, key, 1000, 10, 5, t0 + 2000)
            assert (granted, in_force) == (0, 10)
            # 0.02 tokens accrued at 10/s over 2 ms; 4.98 more take 498 ms at 10/s.
            assert wait_us == pytest.approx(498_000, abs=1)
            # Past the hold, the higher rate applies again.
            later = t0 + 1000 + int(RATE_HOLD_S * S) + 1
            assert (await _take(scripts, key, 1000, 10, 5, later))[2] == 1000
        finally:
            await redis.aclose()

    asyncio.run(scenario())


def test_two_replicas_share_one_rate(any_redis: RedisSettings) -> None:
    rate, burst, seconds = 200.0, 20, 2.0

    async def scenario() -> list[float]:
        group = f"g-{uuid.uuid4().hex[:6]}"
        redis = create_redis(any_redis)
        grants: list[float] = []
        limiters = [
            GroupLimiter(RedisScripts(redis, [SCRIPT]), group, batch_max=10) for _ in range(2)
        ]
        for limiter in limiters:
            limiter.set_rate(rate, burst)
        fetchers = [asyncio.create_task(limiter.run()) for limiter in limiters]
        deadline = time.monotonic() + seconds

        async def deliverer(limiter: GroupLimiter) -> None:
            while time.monotonic() < deadline:
                await limiter.acquire()
                grants.append(time.monotonic())

        workers = [asyncio.create_task(deliverer(limiters[i % 2])) for i in range(40)]
        try:
            await asyncio.wait(workers, timeout=seconds + 1)
        finally:
            for task in [*workers, *fetchers]:
                task.cancel()
            await asyncio.gather(*workers, *fetchers, return_exceptions=True)
            await redis.aclose()
        calls = sum(limiter.redis_calls for limiter in limiters)
        # About rate / batch calls a second, not one per token.
        assert calls < len(grants) / 3
        # Both replicas are served (not necessarily evenly: fairness is not promised).
        assert all(limiter.granted > rate * seconds / 10 for limiter in limiters)
        return grants

    grants = sorted(asyncio.run(scenario()))
    start, span = grants[0], grants[-1] - grants[0]
    assert len(grants) <= rate * span + burst + 1
    assert len(grants) >= rate * seconds * 0.9
    # Every 1-second window (sliding, 10 ms steps): at most rate + burst.
    for step in range(int(seconds * 100)):
        lo = start + step / 100
        in_window = sum(1 for t in grants if lo <= t < lo + 1.0)
        assert in_window <= rate + burst + 1, (lo - start, in_window)


def test_rate_zero_hands_out_nothing_and_a_raise_wakes_it(any_redis: RedisSettings) -> None:
    async def scenario() -> None:
        redis = create_redis(any_redis)
        limiter = GroupLimiter(RedisScripts(redis, [SCRIPT]), f"g-{uuid.uuid4().hex}", batch_max=5)
        fetcher = asyncio.create_task(limiter.run())
        try:
            waiter = asyncio.create_task(limiter.acquire())
            await asyncio.sleep(0.3)
            assert not waiter.done()
            limiter.set_rate(50, 5)
            await asyncio.wait_for(waiter, timeout=1.0)
        finally:
            fetcher.cancel()
            await asyncio.gather(fetcher, return_exceptions=True)
            await redis.aclose()

    asyncio.run(scenario())

"""cancel_and_wait: cancelled tasks really end, even those that drop a cancellation.

Python 3.11's `asyncio.wait_for` (inside every redis-py command) drops a
cancellation that arrives as the call finishes; a loop over Redis calls then
runs on after one `cancel()`. The drain consumer hung at SIGTERM that way.
"""

from __future__ import annotations

import asyncio
import random

from flashgate.redis_client import RedisClient, create_redis
from flashgate.settings import RedisSettings
from flashgate.task_cancel import cancel_and_wait

LOOPS = 60


async def _drops_first_cancel(ended: list[str]) -> None:
    dropped = False
    while True:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            if dropped:
                ended.append("ended")
                raise
            dropped = True  # what wait_for does on 3.11 when the call just finished


def test_a_task_that_drops_a_cancellation_is_cancelled_again() -> None:
    async def scenario() -> None:
        ended: list[str] = []
        task = asyncio.create_task(_drops_first_cancel(ended))
        await asyncio.sleep(0)
        assert await cancel_and_wait([task], timeout_s=5) == set()
        assert task.cancelled() and ended == ["ended"]

    asyncio.run(scenario())


def test_a_task_that_never_ends_is_returned_at_the_deadline() -> None:
    async def immortal() -> None:
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    async def scenario() -> None:
        task = asyncio.create_task(immortal())
        await asyncio.sleep(0)
        assert await cancel_and_wait([task], timeout_s=0.2) == {task}
        assert not task.done()
        task.get_coro().close()

    asyncio.run(scenario())


def test_done_tasks_and_no_tasks_return_at_once() -> None:
    async def scenario() -> None:
        done = asyncio.create_task(asyncio.sleep(0))
        await done
        assert await cancel_and_wait([done], timeout_s=5) == set()
        assert await cancel_and_wait([], timeout_s=5) == set()

    asyncio.run(scenario())


def test_loops_over_real_redis_calls_end_when_cancelled(any_redis: RedisSettings) -> None:
    """Each loop is cancelled at a random moment of its calls; every one ends."""

    async def calls_forever(redis: RedisClient) -> None:
        while True:
            await redis.hgetall("{sale:cancel-test}:h")

    async def scenario() -> None:
        redis = create_redis(any_redis)
        try:
            for _ in range(LOOPS):
                task = asyncio.create_task(calls_forever(redis))
                await asyncio.sleep(random.random() * 0.005)
                assert await cancel_and_wait([task], timeout_s=5) == set()
                assert task.cancelled()
        finally:
            await redis.aclose()

    asyncio.run(scenario())

"""One drain rate for the whole consumer group: a token bucket in Redis shared by every replica.

Deliveries wait in `acquire()`. One fetcher task per process takes tokens from
Redis (`drain_take.lua`) in batches of at least `batch_size()` (about rate/20,
at most `batch_max` and half the burst), never more than there are deliveries
waiting, and hands them out at once; so a replica holds no token it does not
spend right away, and the Redis load is about 20 calls per second per replica
whatever the rate.

Guarantee (what the backend sees, summed over replicas): in any window of t
seconds at most `rate * t + burst` deliveries start, `rate` being the lowest
rate any replica asked for within the last `RATE_HOLD_S` (see the Lua script).
The only slack is the time between a grant and the request reaching the
backend (loopback: well under a millisecond; each request is one token, retries
included). When Redis cannot be reached no token is handed out: the drain
stops rather than overrun the backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable

from flashgate.drain.keys import limiter_key
from flashgate.redis_client import RedisFailureInLoop
from flashgate.redis_scripts.loader import RedisScripts

log = logging.getLogger(__name__)

SCRIPT = "drain_take"
BATCHES_PER_S = 20
RATE_HOLD_S = 0.5
STATE_TTL_MS = 60_000
REDIS_RETRY_S = 0.5
WAIT_JITTER = 0.5  # up to +50 % on a wait for tokens


class GroupLimiter:
    def __init__(
        self,
        scripts: RedisScripts,
        group_id: str,
        *,
        batch_max: int,
        now_us: Callable[[], int] | None = None,
    ) -> None:
        self._scripts = scripts
        self._key = limiter_key(group_id)
        self._batch_max = max(1, batch_max)
        # None: the Redis server's clock, the same for every replica.
        self._now_us = now_us
        self._rate = 0.0
        self._burst = 1
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._wake = asyncio.Event()
        self._idle = True
        self.redis_calls = 0
        self.granted = 0

    @property
    def rate(self) -> float:
        return self._rate

    def set_rate(self, rate_per_s: float, burst: int) -> None:
        """The rate this replica asks for (0 = hand out nothing) and the bucket's capacity."""
        burst = max(1, burst)
        if (rate_per_s, burst) != (self._rate, self._burst):
            self._rate, self._burst = max(0.0, rate_per_s), burst
            self._wake.set()

    def batch_size(self) -> int:
        """The fewest tokens a Redis call waits for: about rate/20, at most half the burst.

        Half the burst is left as slack: a fetcher that wakes late (a busy event loop)
        takes what accrued meanwhile, up to the burst, instead of losing it.
        """
        return max(1, min(self._batch_max, self._burst // 2, round(self._rate / BATCHES_PER_S)))

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> None:
        """Wait for one token; the caller must start its request right away."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        if self._idle:
            self._wake.set()
        await future

    async def run(self) -> None:
        """The fetcher: runs until cancelled."""
        while True:
            while self._waiters and self._waiters[0].done():
                self._waiters.popleft()
            if not self._waiters or self._rate <= 0:
                self._idle = True
                self._wake.clear()
                await self._wake.wait()
                self._idle = False
                continue
            waiting = len(self._waiters)
            want = min(waiting, self.batch_size())
            try:
                granted, wait_s = await self._take(want, min(waiting, self._burst))
            except RedisFailureInLoop as exc:
                # A loop, not tenacity: the retry is one branch of the fetcher, which
                # also waits for waiters and for tokens; each pass must look at the
                # waiters and the rate again before it asks Redis anew.
                log.warning("drain limiter: Redis unavailable, holding deliveries: %s", exc)
                await asyncio.sleep(REDIS_RETRY_S)
                continue
            if granted:
                self._hand_out(granted)
                continue
            self._wake.clear()
            # Jittered: replicas told the same wait would otherwise wake in the same
            # order every time, and the first one takes all that accrued (up to
            # `most`) again and again. Waking a little late loses nothing: the
            # tokens stay in the bucket up to its burst.
            timeout_s = wait_s * (1 + random.random() * WAIT_JITTER)
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can drop a
            # cancellation (see flashgate/task_cancel.py).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._wake.wait()

    async def _take(self, want: int, most: int) -> tuple[int, float]:
        now = "" if self._now_us is None else str(self._now_us())
        args = [
            repr(self._rate),
            str(self._burst),
            str(want),
            now,
            str(int(RATE_HOLD_S * 1_000_000)),
            str(STATE_TTL_MS),
            str(most),
        ]
        self.redis_calls += 1
        granted, wait_us, _rate = await self._scripts.call(SCRIPT, [self._key], args)
        return int(granted), int(wait_us) / 1_000_000

    def _hand_out(self, tokens: int) -> None:
        self.granted += tokens
        while tokens and self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(None)
                tokens -= 1
        # Tokens left over (their waiters were cancelled) are dropped: never spent later.

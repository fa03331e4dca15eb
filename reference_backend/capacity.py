"""Capacity limits of the backend: a token bucket for rate and a bounded wait for concurrency."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from reference_backend.config import default_burst

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class TokenBucket:
    """Token bucket of ``rate`` tokens per second holding at most ``burst`` tokens.

    A caller that finds no token reserves the next free one (the balance goes below zero)
    and sleeps until it is due, so waiters are served in arrival order without polling.
    A rate of 0 means unlimited: every acquire succeeds at once.
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._rate = 0.0
        self._burst = 1.0
        self._tokens = 0.0
        self._updated = clock()
        self.configure(rate, burst)

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def burst(self) -> float:
        return self._burst

    @property
    def tokens(self) -> float:
        """Current balance (negative while callers wait on reserved tokens)."""
        self._refill()
        return self._tokens

    def configure(self, rate: float, burst: float | None = None) -> None:
        """Change rate and burst in place; the balance is kept but capped at the new burst."""
        if not math.isfinite(rate) or rate < 0:
            raise ValueError("rate must be a finite number >= 0")
        new_burst = default_burst(rate) if burst is None else burst
        if not math.isfinite(new_burst) or new_burst < 1:
            raise ValueError("burst must be >= 1")
        was_unlimited = self._rate <= 0
        self._refill()
        self._rate = rate
        self._burst = new_burst
        self._tokens = new_burst if was_unlimited else min(self._tokens, new_burst)
        self._updated = self._clock()

    def _refill(self) -> None:
        now = self._clock()
        if self._rate > 0 and now > self._updated:
            self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = max(self._updated, now)

    def wait_time(self) -> float:
        """Seconds a caller arriving now would wait for a token (0 if one is free)."""
        if self._rate <= 0:
            return 0.0
        self._refill()
        return 0.0 if self._tokens >= 1 else (1.0 - self._tokens) / self._rate

    def try_acquire(self, max_wait: float) -> float | None:
        """Take or reserve a token without sleeping: the delay until it is due, or None.

        None means the wait would exceed ``max_wait``; nothing is taken then.
        """
        if self._rate <= 0:
            return 0.0
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        delay = (1.0 - self._tokens) / self._rate
        if delay > max_wait:
            return None
        self._tokens -= 1
        return delay

    async def acquire(self, max_wait: float) -> bool:
        """Take a token, waiting at most ``max_wait`` seconds for it; False if refused."""
        delay = self.try_acquire(max_wait)
        if delay is None:
            return False
        if delay > 0:
            await self._sleep(delay)
        return True


@dataclass(slots=True)
class Admission:
    """Outcome of ``CapacityLimiter.acquire``; release it once the request is done."""

    admitted: bool
    retry_after: float = 0.0
    _slot: asyncio.Semaphore | None = None

    def release(self) -> None:
        slot, self._slot = self._slot, None
        if slot is not None:
            slot.release()


class CapacityLimiter:
    """Admits a request when a concurrency slot and a rate token are both free in time.

    The slot is taken first (so a request waiting for its token counts as in progress),
    then the token, both within one ``max_wait`` budget. Changing the concurrency limit
    swaps in a new semaphore; requests holding a slot of the old one release it there.
    """

    def __init__(
        self,
        rate: float,
        burst: float | None,
        concurrency: int,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self.bucket = TokenBucket(rate, burst, clock=clock, sleep=sleep)
        self._concurrency = 0
        self._slots: asyncio.Semaphore | None = None
        self.set_concurrency(concurrency)

    @property
    def concurrency(self) -> int:
        return self._concurrency

    def set_concurrency(self, concurrency: int) -> None:
        if concurrency < 0:
            raise ValueError("concurrency must be >= 0")
        if concurrency != self._concurrency:
            self._concurrency = concurrency
            self._slots = asyncio.Semaphore(concurrency) if concurrency > 0 else None

    def configure(
        self,
        *,
        rate: float | None = None,
        burst: float | None = None,
        concurrency: int | None = None,
    ) -> None:
        """Change any of the limits; a new rate without a burst gets the default burst."""
        if rate is not None or burst is not None:
            new_rate = self.bucket.rate if rate is None else rate
            new_burst = burst if burst is not None or rate is not None else self.bucket.burst
            self.bucket.configure(new_rate, new_burst)
        if concurrency is not None:
            self.set_concurrency(concurrency)

    async def _take_slot(self, slots: asyncio.Semaphore, max_wait: float) -> bool:
        if not slots.locked():
            await slots.acquire()
            return True
        if max_wait <= 0:
            return False
        try:
            async with asyncio.timeout(max_wait):
                await slots.acquire()
        except TimeoutError:
            return False
        return True

    async def acquire(self, max_wait: float) -> Admission:
        """Wait at most ``max_wait`` seconds in all for a slot and a token."""
        slots = self._slots
        if slots is not None:
            started = self._clock()
            if not await self._take_slot(slots, max_wait):
                return Admission(admitted=False, retry_after=1.0)
            max_wait = max(0.0, max_wait - (self._clock() - started))
        admission = Admission(admitted=True, _slot=slots)
        delay = self.bucket.try_acquire(max_wait)
        if delay is None:
            admission.release()
            return Admission(admitted=False, retry_after=max(1.0, self.bucket.wait_time()))
        if delay > 0:
            try:
                await self._sleep(delay)
            except BaseException:
                admission.release()
                raise
        return admission

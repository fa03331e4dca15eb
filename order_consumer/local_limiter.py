"""A token bucket for one process: at most `rate` per second after an initial `burst`.

Guarantee: in any window of t seconds at most `burst + rate * t` tokens are
handed out. The clock and the sleep are injected so tests need not wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class TokenBucket:
    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self._rate = rate_per_s
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now

    async def acquire(self, tokens: int = 1) -> None:
        """Wait until `tokens` can be taken (first come, first served)."""
        if tokens > self._burst:
            raise ValueError(f"cannot take {tokens} tokens at once from a burst of {self._burst}")
        async with self._lock:
            self._refill()
            # The epsilon keeps float rounding from turning "almost one token" into a spin.
            while self._tokens + 1e-9 < tokens:
                await self._sleep((tokens - self._tokens) / self._rate)
                self._refill()
            self._tokens = max(0.0, self._tokens - tokens)

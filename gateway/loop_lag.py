"""How late this process's event loop runs: the queue a flash crowd builds before the app.

A crowd's requests wait in socket buffers and in the server's read loop, where
no in-flight count sees them; what the process does see is its own loop falling
behind. A timer due every `interval_s` measures by how much it fired late, and
hands each sample to `observe` (the shedding policy). No request is decided while
the loop is stuck (nothing runs then), so the late tick that ends a stall is
always in time to report it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

TICK_S = 0.01


class LoopLag:
    def __init__(self, observe: Callable[[float, float], None], interval_s: float = TICK_S) -> None:
        self.observe = observe
        self.interval_s = interval_s
        self.last_s = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due = loop.time() + self.interval_s
        self._handle = loop.call_at(self._due, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        self.last_s = now - self._due
        self.observe(self.last_s, now)
        # Due one interval after this tick ran, not after it was due: a loop that is
        # behind gets one sample per stall, not a burst of catch-up ticks.
        self._due = now + self.interval_s
        self._handle = self._loop.call_at(self._due, self._tick)

"""SIGTERM and SIGINT, caught from the first line of `main()` and handed to the worker.

Building the clients and joining takes a second or more; a stop asked for
meanwhile (a rollout that changes its mind, a test that stops right away) must
neither kill the process mid-way (the default action) nor be forgotten: it is
recorded, and the worker is stopped as soon as it exists.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    def __init__(self) -> None:
        self.requested = False

    def install(self) -> None:
        """Record a stop from now on (before the event loop runs)."""
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._record)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def hand_to(self, loop: asyncio.AbstractEventLoop, stop: Callable[[], None]) -> None:
        """From now on a stop calls `stop` on `loop`; one asked for before, now."""
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, stop)
        if self.requested:
            stop()

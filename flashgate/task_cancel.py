"""Cancel asyncio tasks and wait, bounded, until they have really ended.

One `task.cancel()` is not enough on Python 3.11: its `asyncio.wait_for` drops
a cancellation that arrives just as the awaited call finishes (CPython
gh-86296, fixed in 3.12), and redis-py wraps every command it sends in one. A
loop `while True: ... await redis.call()` cancelled at that moment goes on
forever, and whoever awaits it hangs (the drain consumer did not exit on
SIGTERM about once in 20 stops). So the cancellation is repeated until each
task is done, up to a deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

RECANCEL_EVERY_S = 0.05


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[object]], timeout_s: float
) -> set[asyncio.Task[object]]:
    """Cancel `tasks` (again and again) until each is done; those still running after
    `timeout_s` are returned (empty when all ended). Their results are not read."""
    pending = {task for task in tasks if not task.done()}
    deadline = time.monotonic() + timeout_s
    while pending:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(RECANCEL_EVERY_S, remaining))
    return pending

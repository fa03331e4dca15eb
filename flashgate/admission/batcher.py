"""Group commit for Redis calls: requests that arrive together share one round trip.

Each Redis call costs the gateway 175-240 us of Python (redis-py's layers, not
Redis; see docs/FACTS.md), about as much as the HTTP server itself. So a submission
is not sent at once: it waits for the end of the current event-loop tick, or,
when a call is already in flight, for that call to come back; everything
collected by then goes out as one call. An idle gateway pays at most one loop
tick; a busy one pays one Redis call per batch instead of per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

Flush = Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]


class TickBatcher(Generic[T, R]):
    """Collect items and flush them in batches of at most `max_batch`.

    `flush` returns one result per item, in order; a result that is an
    exception is raised in that item's caller only. If `flush` itself raises,
    every caller of the batch gets the exception.
    """

    def __init__(
        self,
        flush: Flush[T, R],
        *,
        max_batch: int,
        max_in_flight: int = 1,
        observe: Callable[[int], None] | None = None,
        observe_seconds: Callable[[float], None] | None = None,
    ) -> None:
        self._flush = flush
        self._observe = observe
        self._observe_seconds = observe_seconds
        self._max_batch = max(1, max_batch)
        self._max_in_flight = max(1, max_in_flight)
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._in_flight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.items = 0

    def submit(self, item: T) -> asyncio.Future[R]:
        """Add `item` to the next batch; await the returned future for its result."""
        # A plain function returning the future: no coroutine frame per item.
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self.enqueue(item, future)
        return future

    def enqueue(self, item: T, future: asyncio.Future[R]) -> None:
        """Add `item` to the next batch; its result (or exception) goes to `future`.

        For callers that are callbacks rather than coroutines; a `future` that is
        already done (its waiter gave up) is skipped when the batch returns, but the
        item is still flushed.
        """
        self._queue.append((item, future))
        if not self._scheduled and self._in_flight < self._max_in_flight:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start)

    def _start(self) -> None:
        self._scheduled = False
        loop = asyncio.get_running_loop()
        while self._queue and self._in_flight < self._max_in_flight:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
            self._in_flight += 1
            task = loop.create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        self.batches += 1
        self.items += len(batch)
        if self._observe is not None:
            self._observe(len(batch))
        started = time.perf_counter()
        try:
            results = await self._flush([item for item, _ in batch])
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(_copy(exc))
            if not isinstance(exc, Exception):
                raise
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        finally:
            if self._observe_seconds is not None:
                self._observe_seconds(time.perf_counter() - started)
            self._in_flight -= 1
            if self._queue and not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._start)

    async def aclose(self) -> None:
        """Wait for flushes in progress (the server stopped sending new requests)."""
        while self._tasks or self._queue:
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            else:
                await asyncio.sleep(0)


def _copy(exc: BaseException) -> BaseException:
    # One exception object raised in many tasks would share (and grow) one traceback.
    try:
        return type(exc)(*exc.args)
    except Exception:
        return exc

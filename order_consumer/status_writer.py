"""Order status updates (delivered / failed) written behind the drain, in batches.

A delivery queues its status and moves on; one task writes the queue every
`FLUSH_INTERVAL_S`: one `drain_mark_final.lua` call per order, pipelined, then
one HINCRBY per sale for the orders counted as delivered. Writing them one
transaction per order cost about 40 % of the consumer's CPU at 2,500 orders/s.

This is the only writer of final statuses: status, `accepted_at`,
`delivered_at` or `reason`, the TTL, and for a delivery the sale's
`delivered_orders` counter, counted once per order (`counted` flag). The
gateway writes `accepted` (mark_accepted.lua) and reads with
`OrderStatusStore.get`.

A batch that fails (Redis away) is tried again a few times, a second apart,
then reported: the orders themselves are delivered either way, only their
status lags.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from dataclasses import dataclass

from redis.exceptions import RedisError

from flashgate.admission.keys import SaleKeys
from flashgate.order_status import status_key
from flashgate.redis_client import RedisClient, RedisFailureInLoop, as_text
from flashgate.redis_scripts.loader import RedisScripts

log = logging.getLogger(__name__)

SCRIPT = "drain_mark_final"
FLUSH_INTERVAL_S = 0.05
BATCH_MAX = 500
MAX_TRIES = 5
RETRY_PAUSE_S = 1.0


@dataclass(slots=True)
class _Update:
    order_id: str
    accepted_at: float
    delivered_at: float | None
    reason: str | None
    tries: int = 0


class StatusWriter:
    def __init__(self, redis: RedisClient, ttl_s: int) -> None:
        self._redis = redis
        self._scripts = RedisScripts(redis, [SCRIPT])
        self._ttl_s = ttl_s
        self._queue: deque[_Update] = deque()
        self._wake = asyncio.Event()
        self.written = 0
        self.dropped = 0

    def delivered(self, order_id: str, accepted_at: float, delivered_at: float) -> None:
        self._queue.append(_Update(order_id, accepted_at, delivered_at, None))

    def failed(self, order_id: str, accepted_at: float, reason: str) -> None:
        self._queue.append(_Update(order_id, accepted_at, None, reason))
        self._wake.set()

    @property
    def backlog(self) -> int:
        return len(self._queue)

    async def run(self) -> None:
        """Write until cancelled."""
        while True:
            self._wake.clear()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can drop a
            # cancellation (see flashgate/task_cancel.py).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_INTERVAL_S):
                    await self._wake.wait()
            if not await self.flush():
                await asyncio.sleep(RETRY_PAUSE_S)

    async def flush(self) -> bool:
        """Write everything queued now (one try per batch); False if a batch failed."""
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(BATCH_MAX, len(self._queue)))]
            try:
                await self._write(batch)
            except RedisFailureInLoop as exc:
                self._retry_later(batch, exc)
                return False
            self.written += len(batch)
        return True

    async def _write(self, batch: list[_Update]) -> None:
        pipeline = self._scripts.pipeline()
        for update in batch:
            if update.delivered_at is not None:
                status, detail = "delivered", repr(update.delivered_at)
            else:
                status, detail = "failed", update.reason or ""
            args = [status, repr(update.accepted_at), detail, str(self._ttl_s)]
            pipeline.script(SCRIPT, [status_key(update.order_id)], args)
        results = await pipeline.execute()
        errors = [result for result in results if isinstance(result, Exception)]
        if errors:
            raise errors[0] if isinstance(errors[0], RedisError) else RedisError(str(errors[0]))
        # Each order counts once toward its sale's delivered orders, however often delivered.
        counted = Counter(as_text(sale_id) for sale_id in results if sale_id)
        if counted:
            async with self._redis.pipeline(transaction=False) as pipe:
                for sale_id, count in counted.items():
                    pipe.hincrby(SaleKeys.of(sale_id).counters, "delivered_orders", count)
                await pipe.execute()

    def _retry_later(self, batch: list[_Update], exc: Exception) -> None:
        # Not tenacity: the budget (MAX_TRIES) is per order, while the tries are per
        # batch of a shared queue that keeps growing; a failed batch goes back to the
        # queue's head and the writer's own loop paces the next flush.
        for update in reversed(batch):
            update.tries += 1
            if update.tries >= MAX_TRIES:
                self.dropped += 1
                log.error("status of order %s not written after %d tries: %s",
                          update.order_id, update.tries, exc)  # fmt: skip
            else:
                self._queue.appendleft(update)
        log.warning("order status writes failing (%d queued), retrying: %s", len(self._queue), exc)

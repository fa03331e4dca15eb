"""Order status in Redis: pending or accepted by the gateway, delivered or failed by the consumer.

One hash per order (`order:<id>`), expiring after the retention window.
- `pending`: Kafka's answer was unknown (the gateway answered `outcome_unknown`);
  the reaper settles it from what Kafka holds, to `accepted` (record found) or
  `failed` with reason `not_stored` (proven absent, units returned).
- `accepted`: written over nothing, `pending` or `not_stored` only, so a
  consumer faster than the gateway's own write never sees its `delivered` (or
  its `failed`) overwritten.
- `delivered` / `failed`: the drain's final word (order_consumer/status_writer.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import msgspec

from flashgate.redis_client import RedisClient, as_text
from flashgate.redis_scripts.loader import RedisScripts

Status = Literal["pending", "accepted", "delivered", "failed"]
Unsettled = Literal["pending", "not_stored"]
# The reason of an order settled absent from Kafka (its units went back to stock).
NOT_STORED = "not_stored"


class OrderStatus(msgspec.Struct, frozen=True, omit_defaults=True):
    order_id: str
    status: Status
    accepted_at: float
    delivered_at: float | None = None
    reason: str | None = None
    # Written by the gateway at accept time: where the order sits in Kafka.
    sale_id: str | None = None
    partition: int | None = None
    offset: int | None = None


class ScriptQueue(Protocol):
    """Something that queues script calls for one round trip (a `ScriptPipeline` that
    knows `mark_accepted`)."""

    def script(
        self,
        name: str,
        keys: Sequence[str | bytes | int | float],
        args: Sequence[str | bytes | int | float],
    ) -> None: ...


SCRIPTS = ("mark_accepted", "mark_unsettled")


def status_key(order_id: str) -> str:
    """The hash of one order's status (also written by the consumer's Lua step)."""
    return f"order:{order_id}"


class OrderStatusStore:
    """Read and write order status hashes."""

    def __init__(self, redis: RedisClient, ttl_s: int) -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        self._ttl_arg = str(ttl_s)
        self._scripts = RedisScripts(redis, SCRIPTS)

    async def mark_accepted(
        self,
        order_id: str,
        accepted_at: float,
        *,
        sale_id: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        """One status write on its own, through the same script the gateway batches."""
        pipe = self._scripts.pipeline()
        self.queue_accepted(
            pipe, order_id, accepted_at, sale_id=sale_id, partition=partition, offset=offset
        )
        (result,) = await pipe.execute()
        if isinstance(result, BaseException):
            raise result

    def queue_accepted(
        self,
        queue: ScriptQueue,
        order_id: str,
        accepted_at: float,
        *,
        sale_id: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        """`mark_accepted` as one script call (mark_accepted.lua) on a caller's pipeline:
        the gateway batches the writes of concurrent requests."""
        located = partition is not None and offset is not None
        args = [
            self._ttl_arg,
            repr(accepted_at),
            sale_id or "",
            str(partition) if located else "",
            str(offset) if located else "",
        ]
        queue.script("mark_accepted", [status_key(order_id)], args)

    def queue_unsettled(
        self,
        queue: ScriptQueue,
        order_id: str,
        status: Unsettled,
        *,
        accepted_at: float | None = None,
        sale_id: str | None = None,
    ) -> None:
        """`pending` or `not_stored` (mark_unsettled.lua) as one call on a caller's pipeline."""
        args = [
            status,
            self._ttl_arg,
            "" if accepted_at is None else repr(accepted_at),
            sale_id or "",
        ]
        queue.script("mark_unsettled", [status_key(order_id)], args)

    async def mark_unsettled(
        self, order_ids: Sequence[str], status: Unsettled, *, sale_id: str | None = None
    ) -> None:
        """Write `pending` or `not_stored` for these orders, in one round trip."""
        if not order_ids:
            return
        pipe = self._scripts.pipeline()
        for order_id in order_ids:
            self.queue_unsettled(pipe, order_id, status, sale_id=sale_id)
        for result in await pipe.execute():
            if isinstance(result, BaseException):
                raise result

    async def get(self, order_id: str) -> OrderStatus | None:
        raw = await self._redis.hgetall(status_key(order_id))
        if not raw:
            return None
        fields = {as_text(k): as_text(v) for k, v in raw.items()}
        return OrderStatus(
            order_id=order_id,
            status=fields["status"],  # type: ignore[arg-type]
            accepted_at=float(fields.get("accepted_at", "0")),
            delivered_at=float(fields["delivered_at"]) if "delivered_at" in fields else None,
            reason=fields.get("reason"),
            sale_id=fields.get("sale_id"),
            partition=int(fields["partition"]) if "partition" in fields else None,
            offset=int(fields["offset"]) if "offset" in fields else None,
        )

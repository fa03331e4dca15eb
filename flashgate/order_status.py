"""Order status in Redis: accepted by the gateway, delivered or failed by the consumer.

One hash per order (`order:<id>`), expiring after the retention window. The
gateway writes `accepted` only if nothing is there yet, so a consumer that is
faster than the gateway's own write never sees its `delivered` overwritten.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

Status = Literal["accepted", "delivered", "failed"]


class OrderStatus(msgspec.Struct, frozen=True, omit_defaults=True):
    order_id: str
    status: Status
    accepted_at: float
    delivered_at: float | None = None
    reason: str | None = None


def _key(order_id: str) -> str:
    return f"order:{order_id}"


class OrderStatusStore:
    """Read and write order status hashes."""

    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self._redis = redis
        self._ttl_s = ttl_s

    async def mark_accepted(self, order_id: str, accepted_at: float) -> None:
        key = _key(order_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(key, "status", "accepted")
            pipe.hset(key, "accepted_at", repr(accepted_at))
            pipe.expire(key, self._ttl_s)
            await pipe.execute()

    async def mark_delivered(self, order_id: str, accepted_at: float, delivered_at: float) -> None:
        await self._set_final(order_id, accepted_at, "delivered", delivered_at=delivered_at)

    async def mark_failed(self, order_id: str, accepted_at: float, reason: str) -> None:
        await self._set_final(order_id, accepted_at, "failed", reason=reason)

    async def _set_final(
        self,
        order_id: str,
        accepted_at: float,
        status: Status,
        delivered_at: float | None = None,
        reason: str | None = None,
    ) -> None:
        mapping: dict[FieldT, EncodableT] = {"status": status, "accepted_at": repr(accepted_at)}
        if delivered_at is not None:
            mapping["delivered_at"] = repr(delivered_at)
        if reason is not None:
            mapping["reason"] = reason
        key = _key(order_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=mapping)
            pipe.expire(key, self._ttl_s)
            await pipe.execute()

    async def get(self, order_id: str) -> OrderStatus | None:
        raw = await self._redis.hgetall(_key(order_id))
        if not raw:
            return None
        fields = {_text(k): _text(v) for k, v in raw.items()}
        return OrderStatus(
            order_id=order_id,
            status=fields["status"],  # type: ignore[arg-type]
            accepted_at=float(fields.get("accepted_at", "0")),
            delivered_at=float(fields["delivered_at"]) if "delivered_at" in fields else None,
            reason=fields.get("reason"),
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

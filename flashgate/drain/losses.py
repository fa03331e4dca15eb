"""Orders Kafka deleted before the drain delivered them: recorded, read, and told to shoppers.

The consumer records each lost offset range (`record`, one Lua step that counts a
range once however often it is seen); the admin API, `flashgate status`, the ops
page and `/metrics` read them (`read`). Lost records cannot be read any more, but
the gateway wrote each accepted order's partition and offset into its status hash:
`mark_expired` finds the orders of a lost range there and fails them with reason
`expired_in_buffer`, so the shopper's status page tells the truth.
"""

from __future__ import annotations

import time

import msgspec

from flashgate.drain.keys import lost_key, lost_ranges_key
from flashgate.redis_client import RedisClient, as_text
from flashgate.redis_scripts.loader import RedisScripts

EXPIRED_REASON = "expired_in_buffer"
RANGES_KEPT = 1000
SCAN_BATCH = 500
SCRIPTS = ("drain_lost", "mark_expired")


class LostRange(msgspec.Struct, frozen=True):
    """Offsets [first, end) of one partition, deleted by retention before delivery."""

    topic: str
    partition: int
    first: int
    end: int
    detected_at: float

    @property
    def count(self) -> int:
        return self.end - self.first


class Losses(msgspec.Struct, frozen=True):
    total: int
    ranges: list[LostRange]


_range_decoder = msgspec.json.Decoder(LostRange)


class LossBook:
    """Writes and reads one consumer group's lost ranges."""

    def __init__(self, redis: RedisClient, group_id: str, order_status_ttl_s: int) -> None:
        self._redis = redis
        self._group_id = group_id
        self._ttl_s = order_status_ttl_s
        self._scripts = RedisScripts(redis, SCRIPTS)

    async def record(self, topic: str, partition: int, first: int, end: int) -> LostRange | None:
        """Record offsets [first, end) as lost; the part not recorded before, or None."""
        keys = [lost_key(self._group_id), lost_ranges_key(self._group_id)]
        args: list[str | int] = [partition, first, end, repr(time.time()), topic, RANGES_KEPT]
        new_first, new_end = await self._scripts.call("drain_lost", keys, args)
        if int(new_first) >= int(new_end):
            return None
        return LostRange(topic, partition, int(new_first), int(new_end), time.time())

    async def mark_expired(self, lost: LostRange) -> list[str]:
        """Fail (`expired_in_buffer`) every still-waiting order whose status says it sat
        in the lost range; the order ids marked. A scan: losses are rare, orders many."""
        marked: list[str] = []
        batch: list[str] = []
        async for key in self._redis.scan_iter(match="order:*", count=SCAN_BATCH):
            batch.append(as_text(key))
            if len(batch) >= SCAN_BATCH:
                marked += await self._mark_batch(batch, lost)
                batch = []
        if batch:
            marked += await self._mark_batch(batch, lost)
        return marked

    async def _mark_batch(self, keys: list[str], lost: LostRange) -> list[str]:
        marked = []
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(key, ["partition", "offset"])
            located = await pipe.execute()
        for key, (partition, offset) in zip(keys, located, strict=True):
            if partition is None or offset is None or int(partition) != lost.partition:
                continue
            inside = lost.first <= int(offset) < lost.end
            if inside and await self._scripts.call("mark_expired", [key], [self._ttl_s]):
                marked.append(key.removeprefix("order:"))
        return marked


async def read(redis: RedisClient, group_id: str, ranges: int = 20) -> Losses:
    """The group's lost order count and its latest `ranges` lost ranges."""
    total = await redis.hget(lost_key(group_id), "total")
    raw = await redis.lrange(lost_ranges_key(group_id), -ranges, -1)
    decoded = [_range_decoder.decode(item if isinstance(item, bytes) else item.encode())
               for item in raw]  # fmt: skip
    return Losses(total=int(total) if total is not None else 0, ranges=decoded)

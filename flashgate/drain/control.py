"""Ops' hand on the drain: a rate override and a pause switch, kept in Redis.

The admin API writes here; every consumer reads it at least once a second, so a
change reaches the whole group within a second and survives consumer restarts.
"""

from __future__ import annotations

import time

import msgspec

from flashgate.drain.keys import override_key
from flashgate.redis_client import RedisClient, as_text


class DrainOverride(msgspec.Struct, frozen=True):
    rate: float | None = None
    paused: bool = False
    updated_at: float | None = None


class DrainControl:
    def __init__(self, redis: RedisClient, group_id: str) -> None:
        self._redis = redis
        self._key = override_key(group_id)

    async def get(self) -> DrainOverride:
        raw = {as_text(k): as_text(v) for k, v in (await self._redis.hgetall(self._key)).items()}
        rate = raw.get("rate")
        updated = raw.get("updated_at")
        return DrainOverride(
            rate=float(rate) if rate not in (None, "") else None,
            paused=raw.get("paused") == "1",
            updated_at=float(updated) if updated else None,
        )

    async def set_rate(self, rate: float | None) -> DrainOverride:
        """Override the configured rate; None goes back to the config file."""
        if rate is not None and rate < 0:
            raise ValueError("rate must be >= 0")
        async with self._redis.pipeline(transaction=True) as pipe:
            if rate is None:
                pipe.hdel(self._key, "rate")
            else:
                pipe.hset(self._key, "rate", repr(float(rate)))
            pipe.hset(self._key, "updated_at", repr(time.time()))
            await pipe.execute()
        return await self.get()

    async def set_paused(self, paused: bool) -> DrainOverride:
        await self._redis.hset(
            self._key, mapping={"paused": "1" if paused else "0", "updated_at": repr(time.time())}
        )
        return await self.get()

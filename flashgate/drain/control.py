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
    # When the current pause began (None while running): how long orders have been held.
    paused_at: float | None = None


class DrainControl:
    def __init__(self, redis: RedisClient, group_id: str) -> None:
        self._redis = redis
        self._key = override_key(group_id)

    async def get(self) -> DrainOverride:
        raw = {as_text(k): as_text(v) for k, v in (await self._redis.hgetall(self._key)).items()}
        rate = raw.get("rate")
        updated = raw.get("updated_at")
        paused = raw.get("paused") == "1"
        paused_at = raw.get("paused_at")
        return DrainOverride(
            rate=float(rate) if rate not in (None, "") else None,
            paused=paused,
            updated_at=float(updated) if updated else None,
            paused_at=float(paused_at) if paused and paused_at else None,
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
        """Hold or release the drain; pausing again keeps the first pause's start."""
        now = repr(time.time())
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._key, mapping={"paused": "1" if paused else "0", "updated_at": now})
            if paused:
                pipe.hsetnx(self._key, "paused_at", now)
            else:
                pipe.hdel(self._key, "paused_at")
            await pipe.execute()
        return await self.get()

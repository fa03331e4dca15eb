"""Create the asyncio Redis client from the settings (one pool per process)."""

from __future__ import annotations

from redis.asyncio import Redis

from flashgate.settings import RedisSettings


def create_redis(settings: RedisSettings) -> Redis:
    # Short timeouts: a request must fail fast when Redis is gone, not hang.
    return Redis.from_url(
        settings.url,
        socket_timeout=2.0,
        socket_connect_timeout=2.0,
        health_check_interval=30,
        max_connections=256,
    )


def as_text(value: bytes | str) -> str:
    """A Redis reply as text, whether or not the client decodes responses."""
    return value.decode() if isinstance(value, bytes) else value

"""A full Redis (`maxmemory` reached, `noeviction`) refuses writes: the gateway answers
503 `unavailable` with Retry-After, writes nothing, and takes orders again once
memory is freed. Real gateway, real Kafka, and a Redis of its own (its memory
limit is set per test, so the session's Redis is left alone)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from flashgate.stack.kafka_broker import KafkaBroker
from flashgate.stack.ports import free_port
from flashgate.stack.redis_server import RedisServer
from tests.gateway_client import OPEN_RATES, Answer, Client, new_env, topic_size
from tests.services import Services, admin_json, load_sale

FILLER_BYTES = 64 * 1024
# Room above what Redis uses once the sale is loaded: a few filler values.
HEADROOM_BYTES = 1024 * 1024


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path / "redis")
    server.start(tmp_path / "redis.log")
    try:
        server.wait_listening()
        yield server
    finally:
        server.stop()


def _fill(client: redis.Redis) -> int:
    """Write filler until Redis refuses with OOM; how many values it took."""
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", used + HEADROOM_BYTES)
    for index in range(10_000):
        try:
            client.set(f"filler:{index}", b"x" * FILLER_BYTES)
        except redis.exceptions.OutOfMemoryError:
            return index
    raise AssertionError("Redis never refused a write: maxmemory is not applied")


def _keys(client: redis.Redis) -> set[bytes]:
    return {key for key in client.scan_iter() if not key.startswith(b"filler:")}


@pytest.mark.parametrize(
    "admission",
    [
        {},  # batched: one pipeline per event-loop tick (the default)
        {"FLASHGATE_GATEWAY_ADMISSION_BATCHING": "false"},  # one redis-py call each
    ],
    ids=["batched", "unbatched"],
)
def test_full_redis_gives_503_and_writes_nothing(
    kafka_broker: KafkaBroker, own_redis: RedisServer, tmp_path: Path, admission: dict[str, str]
) -> None:
    env = new_env(kafka_broker, own_redis, tmp_path)
    services = Services(env)
    client = redis.Redis.from_url(own_redis.url)
    try:
        gateway = services.start_gateway(**admission)
        sale_id = f"sale-{uuid.uuid4().hex[:8]}"
        load_sale(env, sale_id, {"stock": {"A": 5}, "rates": OPEN_RATES})
        report_before = admin_json(env, "GET", f"/admin/v1/sales/{sale_id}")
        keys_before = _keys(client)
        topic = env.variables["FLASHGATE_KAFKA_ORDERS_TOPIC"]
        bootstrap = env.variables["FLASHGATE_KAFKA_BOOTSTRAP_SERVERS"]
        assert _fill(client) > 0

        async def refused() -> list[Answer]:
            async with Client(env.gateway_url) as http:
                return [
                    await http.order(sale_id=sale_id, user_id="u1"),
                    await http.order(sale_id=sale_id, user_id="u2", quantity=2),
                    await http.order(headers={"Idempotency-Key": "full-1"}, sale_id=sale_id),
                ]

        for answer in asyncio.run(refused()):
            assert (answer.status, answer.body["error"]) == (503, "unavailable"), answer
            assert int(answer.headers["Retry-After"]) >= 1
        # Nothing half-written: no reservation, no limiter state, no Idempotency-Key,
        # no status, no record.
        assert _keys(client) == keys_before
        assert topic_size(bootstrap, topic) == 0

        client.delete(*client.keys("filler:*"))
        # Read once memory is free: Redis refuses even a read-only MULTI when full.
        assert admin_json(env, "GET", f"/admin/v1/sales/{sale_id}") == report_before

        async def taken() -> Answer:
            async with Client(env.gateway_url) as http:
                return await http.order(headers={"Idempotency-Key": "full-1"}, sale_id=sale_id)

        answer = asyncio.run(taken())
        assert answer.status == 202, answer
        log = gateway.log_tail(400)
        assert "Traceback" not in log, log
    finally:
        client.close()
        services.stop_all()

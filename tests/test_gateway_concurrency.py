"""Concurrency on a real gateway, Kafka and Redis: no oversell, one order per
Idempotency-Key, and GCRA admitting rate x time + burst."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest

from flashgate.stack.kafka_broker import KafkaBroker
from flashgate.stack.redis_server import RedisServer
from tests.gateway_client import OPEN_RATES, Answer, Client, new_env, running_gateway, topic_size
from tests.services import ServiceEnv, admin_json, load_sale

BUYERS = 1_000
UNITS = 100


@pytest.fixture(scope="module")
def env(
    kafka_broker: KafkaBroker, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceEnv]:
    env = new_env(kafka_broker, redis_server, tmp_path_factory.mktemp("gateway-race"))
    yield from (env for _ in running_gateway(env))


def _sale(env: ServiceEnv, **fields: object) -> str:
    sale_id = f"sale-{uuid.uuid4().hex[:8]}"
    load_sale(env, sale_id, {"rates": OPEN_RATES, **fields})
    return sale_id


def _records(env: ServiceEnv) -> int:
    return topic_size(
        env.variables["FLASHGATE_KAFKA_BOOTSTRAP_SERVERS"],
        env.variables["FLASHGATE_KAFKA_ORDERS_TOPIC"],
    )


def test_oversell_race_1000_buyers_100_units(env: ServiceEnv) -> None:
    sale_id = _sale(env, stock={"A": UNITS})
    before = _records(env)

    async def buyers() -> list[Answer]:
        async with Client(env.gateway_url, connections=BUYERS) as client:
            return await asyncio.gather(
                *(client.order(sale_id=sale_id, user_id=f"buyer-{i}") for i in range(BUYERS))
            )

    answers = asyncio.run(buyers())
    statuses = Counter(a.status for a in answers)
    assert statuses == {202: UNITS, 409: BUYERS - UNITS}, statuses
    assert {a.body["error"] for a in answers if a.status == 409} == {"sold_out"}
    assert len({a.body["order_id"] for a in answers if a.status == 202}) == UNITS
    report = admin_json(env, "GET", f"/admin/v1/sales/{sale_id}")
    assert report["skus"]["A"] == {
        "loaded": UNITS,
        "remaining": 0,
        "reserved": 0,
        "accepted": UNITS,
    }
    assert report["pending_reservations"] == 0
    assert _records(env) - before == UNITS


def test_50_concurrent_identical_requests_make_one_order(env: ServiceEnv) -> None:
    sale_id = _sale(env, stock={"A": 10})
    before = _records(env)
    key = {"Idempotency-Key": f"retry-storm-{uuid.uuid4().hex}"}

    async def storm() -> list[Answer]:
        async with Client(env.gateway_url, connections=50) as client:
            return await asyncio.gather(
                *(client.order(headers=key, sale_id=sale_id, quantity=2) for _ in range(50))
            )

    answers = asyncio.run(storm())
    assert [a.status for a in answers] == [202] * 50
    assert len({a.body["order_id"] for a in answers}) == 1
    replayed = [a.headers.get("Idempotent-Replayed") for a in answers]
    assert replayed.count("true") == 49 and replayed.count(None) == 1
    assert admin_json(env, "GET", f"/admin/v1/sales/{sale_id}")["accepted_units"] == 2
    assert _records(env) - before == 1


def test_gcra_admits_rate_times_time_plus_burst(env: ServiceEnv) -> None:
    rate, burst, seconds, offered = 100.0, 20, 3.0, 300.0
    rates = {**OPEN_RATES, "sale": {"per_second": rate, "burst": burst}}
    sale_id = _sale(env, stock={"A": 10**6}, rates=rates)

    async def offer() -> tuple[list[int], float]:
        async with Client(env.gateway_url, connections=64) as client:
            tasks: list[asyncio.Task[Answer]] = []
            start = time.monotonic()
            sent = 0
            while (elapsed := time.monotonic() - start) < seconds:
                while sent < elapsed * offered:
                    tasks.append(
                        asyncio.create_task(client.order(sale_id=sale_id, user_id=f"u{sent}"))
                    )
                    sent += 1
                await asyncio.sleep(0.002)
            span = time.monotonic() - start
            answers = await asyncio.gather(*tasks)
            return [a.status for a in answers], span

    statuses, span = asyncio.run(offer())
    counts = Counter(statuses)
    assert set(counts) <= {202, 429}, counts
    expected = rate * span + burst
    assert abs(counts[202] - expected) <= 0.02 * expected, (counts, expected)

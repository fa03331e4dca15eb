"""The order path on a real Redis Cluster (3 primaries, 3 replicas) with `wait_replicas = 1`.

Gateway, consumer and reference backend are real processes on a real Kafka
broker; Redis is the session's cluster. Two sales land on different primaries
(their hash tags' slots), 1,000 buyers race for 100 units of one of them, and
every accepted order reaches the backend once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.cluster import RedisCluster

from flashgate.admission.keys import SaleKeys
from flashgate.stack.kafka_broker import KafkaBroker
from flashgate.stack.redis_cluster import RedisClusterNodes
from tests.gateway_client import new_env
from tests.services import Services, admin_json, http_json, load_sale, wait_until

BUYERS = 1000
UNITS = 100


@pytest.fixture
def cluster_services(
    kafka_broker: KafkaBroker, redis_cluster: RedisClusterNodes, tmp_path: Path
) -> Iterator[Services]:
    env = new_env(kafka_broker, redis_cluster, tmp_path)
    env.variables |= {"FLASHGATE_REDIS_MODE": "cluster", "FLASHGATE_REDIS_WAIT_REPLICAS": "1"}
    services = Services(env)
    try:
        yield services
    finally:
        services.stop_all()
        client = RedisCluster.from_url(redis_cluster.url)
        try:
            client.flushdb(target_nodes=RedisCluster.PRIMARIES)
        finally:
            client.close()


async def _buy(base_url: str, sale_id: str, count: int) -> list[tuple[int, dict[str, Any]]]:
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post(i: int) -> tuple[int, dict[str, Any]]:
            order = {"sale_id": sale_id, "sku": "SKU-1", "quantity": 1, "user_id": f"user-{i}"}
            async with session.post(f"{base_url}/v1/orders", json=order) as response:
                return response.status, json.loads(await response.read())

        return await asyncio.gather(*(post(i) for i in range(count)))


def test_cluster_orders_end_to_end_with_no_oversell(
    cluster_services: Services, redis_cluster: RedisClusterNodes
) -> None:
    services = cluster_services
    env = services.env
    # Two sales whose hash tags live on different primaries (names picked by slot).
    first = "hot-sale"
    first_primary = redis_cluster.primary_of(SaleKeys.of(first).core[0])
    second = next(
        name
        for name in (f"sale-{i}" for i in range(100))
        if redis_cluster.primary_of(SaleKeys.of(name).core[0]) != first_primary
    )
    services.start_backend()
    services.start_consumer()
    services.start_gateway()
    load_sale(env, first, {"stock": {"SKU-1": UNITS}})
    load_sale(env, second, {"stock": {"SKU-1": 10}})
    assert http_json("GET", f"{env.gateway_url}/readyz")["checks"]["redis"] is True

    answers = asyncio.run(_buy(env.gateway_url, first, BUYERS))
    answers += asyncio.run(_buy(env.gateway_url, second, 5))

    statuses = [status for status, _ in answers]
    accepted = [body["order_id"] for status, body in answers if status == 202]
    assert statuses.count(202) == UNITS + 5, sorted(set(statuses))
    # Everything else was told sold out (or shaped): never a 5xx on a healthy cluster.
    assert all(status in (202, 409, 429) for status in statuses), sorted(set(statuses))
    hot = admin_json(env, "GET", f"/admin/v1/sales/{first}")
    assert hot["skus"]["SKU-1"]["remaining"] == 0
    assert hot["skus"]["SKU-1"]["accepted"] == UNITS

    def all_stored() -> bool:
        return int(http_json("GET", f"{env.backend_url}/stats")["orders"]) >= len(accepted)

    assert wait_until(all_stored, timeout_s=60), http_json("GET", f"{env.backend_url}/stats")
    stats = http_json("GET", f"{env.backend_url}/stats")
    assert (stats["orders"], stats["duplicates"]) == (len(accepted), 0)

    def all_delivered() -> bool:
        return all(
            http_json("GET", f"{env.gateway_url}/v1/orders/{order_id}")["status"] == "delivered"
            for order_id in accepted
        )

    assert wait_until(all_delivered, timeout_s=30)
    sale = admin_json(env, "GET", f"/admin/v1/sales/{second}")
    assert (sale["accepted_orders"], sale["delivered_orders"]) == (5, 5)
    # Ops' hand and view work on the cluster too: override, pause, overview.
    assert admin_json(env, "PUT", "/admin/v1/drain", {"rate": 700})["override_rate"] == 700
    assert admin_json(env, "PUT", "/admin/v1/drain", {"rate": None})["override_rate"] is None
    drain = admin_json(env, "GET", "/admin/v1/drain")
    assert drain["consumers"] >= 1
    overview = admin_json(env, "GET", "/admin/v1/overview")
    assert {first, second} <= set(overview["sales"])

"""End to end on a real Kafka broker and Redis: POST orders, find each in the backend once."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from tests.services import Services, admin_json, http_json, load_sale, wait_until

ORDERS = 200


async def _post_orders(base_url: str, count: int) -> list[tuple[int, dict[str, Any]]]:
    async with aiohttp.ClientSession() as session:

        async def post(i: int) -> tuple[int, dict[str, Any]]:
            order = {"sale_id": "sale-1", "sku": f"SKU-{i % 3}", "quantity": 1,
                     "user_id": f"user-{i}"}  # fmt: skip
            async with session.post(f"{base_url}/v1/orders", json=order) as response:
                return response.status, json.loads(await response.read())

        return await asyncio.gather(*(post(i) for i in range(count)))


def test_orders_reach_the_backend_exactly_once(services: Services) -> None:
    services.start_backend()
    services.start_consumer()
    services.start_gateway()
    env = services.env
    load_sale(env, "sale-1", {"stock": {f"SKU-{i}": ORDERS for i in range(3)}})

    answers = asyncio.run(_post_orders(env.gateway_url, ORDERS))

    assert [status for status, _ in answers] == [202] * ORDERS
    order_ids = [body["order_id"] for _, body in answers]
    assert len(set(order_ids)) == ORDERS
    first = answers[0][1]
    assert first["status"] == "accepted"
    assert first["status_url"] == f"/v1/orders/{first['order_id']}"

    def all_stored() -> bool:
        return int(http_json("GET", f"{env.backend_url}/stats")["orders"]) >= ORDERS

    assert wait_until(all_stored, timeout_s=60), http_json("GET", f"{env.backend_url}/stats")
    stats = http_json("GET", f"{env.backend_url}/stats")
    assert stats["orders"] == ORDERS
    assert stats["duplicates"] == 0
    for order_id in order_ids:
        stored = http_json("GET", f"{env.backend_url}/orders/{order_id}")
        assert stored["order_id"] == order_id

    def all_delivered() -> bool:
        return all(
            http_json("GET", f"{env.gateway_url}/v1/orders/{order_id}")["status"] == "delivered"
            for order_id in order_ids
        )

    assert wait_until(all_delivered, timeout_s=20)
    status = http_json("GET", f"{env.gateway_url}/v1/orders/{order_ids[0]}")
    assert status["delivered_at"] >= status["accepted_at"]
    sale = admin_json(env, "GET", "/admin/v1/sales/sale-1")
    assert (sale["accepted_orders"], sale["delivered_orders"]) == (ORDERS, ORDERS)

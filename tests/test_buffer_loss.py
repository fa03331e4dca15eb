"""Loss made loud, on a real broker: records Kafka deletes before delivery are reported by
offset, their orders marked `expired_in_buffer`, and the drain goes on from the earliest.

The orders topic keeps records for 30 s in 1 s segments, and the session broker
checks retention every second (tests/services.py). The drain is paused while orders
are accepted through the gateway; the test waits (on Kafka's log start offsets, a
condition) until retention deleted them, then resumes the drain.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request

import pytest
import redis

from tests.buffer_support import log_starts, produce_each_partition, shorten_retention, stored_ids
from tests.gateway_client import OPEN_RATES, Client
from tests.services import Services, admin_json, load_sale, wait_drain_paused, wait_until

pytestmark = pytest.mark.e2e

RETENTION_MS = 30_000
SEGMENT_MS = 1_000
LOST = 24


def test_records_deleted_before_delivery_are_reported_by_offset(services: Services) -> None:
    env = services.env
    env.variables["FLASHGATE_KAFKA_RETENTION_MS"] = str(RETENTION_MS)
    settings = env.settings
    shorten_retention(settings, RETENTION_MS, SEGMENT_MS)
    services.start_backend()
    services.start_gateway()
    consumer = services.start_consumer()
    # "accept": the guard never refuses this sale; the test is about what the drain does.
    load_sale(env, "s", {"stock": {"A": 1000}, "rates": OPEN_RATES, "on_backlog_full": "accept"})

    # Every partition has a delivered past, so the drain knows where it stands in each.
    warm = produce_each_partition(settings, 2, "warm")
    assert wait_until(lambda: set(warm) <= stored_ids(services), 30)
    admin_json(env, "PUT", "/admin/v1/drain", {"paused": True})
    assert wait_drain_paused(env)

    async def accept() -> list[str]:
        async with Client(env.gateway_url) as client:
            answers = [await client.order(sale_id="s", user_id=f"u{i}") for i in range(LOST)]
        assert [a.status for a in answers] == [202] * LOST, [a.body for a in answers]
        return [a.body["order_id"] for a in answers]

    accepted_at = time.time()
    lost_ids = asyncio.run(accept())
    client = redis.Redis.from_url(env.variables["FLASHGATE_REDIS_URL"])
    try:
        where = {}
        for order_id in lost_ids:
            raw = client.hgetall(f"order:{order_id}")
            where[order_id] = (int(raw[b"partition"]), int(raw[b"offset"]))
    finally:
        client.close()
    expected: dict[int, tuple[int, int]] = {}
    for partition, offset in where.values():
        first, end = expected.get(partition, (offset, offset + 1))
        expected[partition] = (min(first, offset), max(end, offset + 1))
    assert all(first == 2 for first, _ in expected.values())  # right after the warm-up

    # Later orders, in segments of their own, outlive the deleted ones.
    assert wait_until(lambda: time.time() > accepted_at + 2 * SEGMENT_MS / 1000, 5)
    survivors = produce_each_partition(settings, 1, "after")
    assert wait_until(
        lambda: all(log_starts(settings)[p] >= end for p, (_, end) in expected.items()),
        RETENTION_MS / 1000 + 20,
        interval_s=0.5,
    ), log_starts(settings)

    admin_json(env, "PUT", "/admin/v1/drain", {"paused": False})
    assert wait_until(lambda: set(survivors) <= stored_ids(services), 30)

    def reported() -> bool:
        return bool(admin_json(env, "GET", "/admin/v1/drain")["lost_orders"] == LOST)

    assert wait_until(reported, 20), admin_json(env, "GET", "/admin/v1/drain")
    drain = admin_json(env, "GET", "/admin/v1/drain")
    ranges = {r["partition"]: (r["first"], r["end"]) for r in drain["lost_ranges"]}
    assert ranges == expected
    assert not set(lost_ids) & stored_ids(services)  # deleted, so never delivered

    async def statuses() -> list[tuple[str, str | None]]:
        async with Client(env.gateway_url) as client:
            bodies = [(await client.call("GET", f"/v1/orders/{i}")).body for i in lost_ids]
        return [(b["status"], b.get("reason")) for b in bodies]

    assert wait_until(
        lambda: asyncio.run(statuses()) == [("failed", "expired_in_buffer")] * LOST, 20
    ), asyncio.run(statuses())
    errors = [
        line for line in consumer.log_tail(400).splitlines() if "deleted by retention" in line
    ]
    assert len(errors) == len(expected), errors
    for partition, (first, end) in expected.items():
        assert any(f"[{partition}]:" in e and f"offsets {first}-{end - 1}" in e for e in errors)
    with urllib.request.urlopen(f"{env.gateway_url}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert f'flashgate_drain_lost_orders_total{{group="{settings.drain.group_id}"}} {LOST}.0' in (
        metrics
    )

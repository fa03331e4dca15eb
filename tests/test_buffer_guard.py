"""Backlog-aware admission on a real broker: a sale bigger than the drain can deliver
within the retention ends with every 202 delivered and the excess refused 503
`backlog_full`, with a `Retry-After` taken from the projection.

The orders topic keeps records 40 s (1 s segments; the session broker checks
retention every second); `buffer_safety_s` = 25 leaves 15 s of delivery time, the
drain delivers 20 orders/s, so about 300 orders fit. Orders arrive at about 60/s
for 12 s: the guard must close, let the drain's pace through, and no accepted order
may wait long enough for retention to delete it.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import msgspec
import pytest
import redis

from flashgate.drain.keys import projection_key
from flashgate.drain.projection import seconds_until_fits
from gateway.backlog_guard import SharedProjection
from tests.buffer_support import shorten_retention, stored_ids
from tests.gateway_client import OPEN_RATES, Answer, Client
from tests.services import Services, admin_json, load_sale, wait_until

pytestmark = pytest.mark.e2e

RETENTION_S = 40
SAFETY_S = 25
LIMIT_S = RETENTION_S - SAFETY_S
DRAIN_RATE = 20
SEND_RATE = 60
SEND_S = 12


def test_sale_larger_than_the_drain_is_refused_honestly(services: Services) -> None:
    env = services.env
    env.variables.update(
        FLASHGATE_KAFKA_RETENTION_MS=str(RETENTION_S * 1000),
        FLASHGATE_GATEWAY_BUFFER_SAFETY_S=str(SAFETY_S),
        FLASHGATE_DRAIN_RATE_PER_S=str(DRAIN_RATE),
        FLASHGATE_DRAIN_BURST="5",
    )
    settings = env.settings
    shorten_retention(settings, RETENTION_S * 1000, 1000)
    services.start_backend()
    services.start_gateway()
    services.start_consumer()
    load_sale(env, "s", {"stock": {"A": 100_000}, "rates": OPEN_RATES})
    assert wait_until(lambda: admin_json(env, "GET", "/admin/v1/drain")["consumers"] >= 1, 30)
    shared_key = projection_key(settings.drain.group_id)
    store = redis.Redis.from_url(env.variables["FLASHGATE_REDIS_URL"])

    def shared() -> SharedProjection | None:
        raw = store.get(shared_key)
        return msgspec.json.decode(raw, type=SharedProjection) if raw else None

    accepted: list[str] = []
    refusals: list[tuple[int, dict[str, Any]]] = []
    # Every projection the gateway shared, by when it was computed: each lives a second
    # in Redis and is read around every request, so each one a refusal names is here.
    seen: dict[float, SharedProjection] = {}

    def remember() -> None:
        current = shared()
        if current is not None:
            seen[current.projection.computed_at] = current

    async def send() -> None:
        gate = asyncio.Semaphore(32)
        async with Client(env.gateway_url) as client:

            async def one(i: int) -> None:
                async with gate:
                    remember()
                    answer: Answer = await client.order(sale_id="s", user_id=f"u{i}")
                    remember()
                if answer.status == 202:
                    accepted.append(answer.body["order_id"])
                    return
                assert (answer.status, answer.body["error"]) == (503, "backlog_full"), answer
                refusals.append((int(answer.headers["Retry-After"]), answer.body))

            start = time.monotonic()
            tasks = []
            for i in range(SEND_RATE * SEND_S):
                # Shoppers arrive on a schedule, whatever the answers' latency.
                ahead = start + i / SEND_RATE - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
                tasks.append(asyncio.create_task(one(i)))
            await asyncio.gather(*tasks)

    try:
        asyncio.run(send())
        assert refusals, "the guard never closed"
        assert accepted, "nothing was accepted"
        checked = []
        for retry_after, body in refusals:
            used = seen.get(body["projected_at"])
            if used is None:
                continue
            # The answer's numbers are that projection's: Retry-After is when it fits.
            assert body["delivered_in_s"] == used.projection.admitted_delivered_in_s
            assert body["limit_s"] == LIMIT_S
            waiting = seconds_until_fits(used.projection, LIMIT_S)
            assert waiting is not None
            checked.append((retry_after, max(1, math.ceil(waiting))))
        assert len(checked) >= len(refusals) // 2, (len(checked), len(refusals))
        assert all(given == projected for given, projected in checked), checked
        # The guard reopens as the drain catches up: orders were accepted after refusals.
        assert len(accepted) > LIMIT_S * DRAIN_RATE

        # Every 202 reaches the backend; none was lost to retention.
        assert wait_until(lambda: set(accepted) <= stored_ids(services), 60, interval_s=1), len(
            set(accepted) - stored_ids(services)
        )
        drain: dict[str, Any] = admin_json(env, "GET", "/admin/v1/drain")
        assert drain["lost_orders"] == 0, drain
        waits = []
        for order_id in accepted:
            status = store.hgetall(f"order:{order_id}")
            waits.append(float(status[b"delivered_at"]) - float(status[b"accepted_at"]))
        assert max(waits) < RETENTION_S, max(waits)
    finally:
        store.close()

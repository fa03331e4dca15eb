"""The buffer's Redis steps on standalone Redis and on Redis Cluster: lost ranges counted
once, waiting orders of a lost range marked `expired_in_buffer`, and the guard's
projection shared between gateways and its refusal for a sale's own limit."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from flashgate.admission.keys import SaleKeys
from flashgate.drain import losses
from flashgate.drain.control import DrainControl
from flashgate.drain.keys import projection_key
from flashgate.drain.losses import LossBook
from flashgate.drain.progress import ConsumerReport, publish
from flashgate.kafka.config import consumer_config
from flashgate.order_status import status_key
from flashgate.redis_client import create_redis
from flashgate.settings import RedisSettings, load_settings
from flashgate.stack.redis_server import RedisServer
from gateway.backlog_guard import PAUSED_RETRY_AFTER_S, BacklogGuard


def test_lost_ranges_are_counted_once_and_their_orders_marked(any_redis: RedisSettings) -> None:
    group = f"g-{uuid.uuid4().hex[:6]}"

    async def scenario() -> None:
        redis = create_redis(any_redis)
        book = LossBook(redis, group, order_status_ttl_s=600)
        suffix = uuid.uuid4().hex[:6]
        # Offsets no other test's orders sit at: the session's Redis holds the orders of
        # every test (each on its own topic), and the scan judges partition and offset.
        base = 10**12 + int(suffix, 16)
        orders = {f"lost-{suffix}-{o}": base + o for o in range(3, 8)}
        orders[f"kept-{suffix}"] = base + 8
        try:
            for order_id, offset in orders.items():
                await redis.hset(
                    status_key(order_id),
                    mapping={"status": "accepted", "partition": "2", "offset": str(offset)},
                )
            delivered = f"lost-{suffix}-5"
            await redis.hset(status_key(delivered), "status", "delivered")
            first = await book.record("orders", 2, base + 3, base + 8)
            assert first is not None and (first.first, first.end) == (base + 3, base + 8)
            # Seen again after a rebalance, and a range reaching further: only the new part.
            assert await book.record("orders", 2, base + 3, base + 8) is None
            more = await book.record("orders", 2, base + 3, base + 10)
            assert more is not None and (more.first, more.end) == (base + 8, base + 10)
            marked = await book.mark_expired(first)
            assert sorted(marked) == sorted(o for o in orders if o.startswith("lost") and
                                            o != delivered)  # fmt: skip
            assert await redis.hget(status_key(f"kept-{suffix}"), "status") == b"accepted"
            assert await redis.hget(status_key(delivered), "status") == b"delivered"
            reason = await redis.hget(status_key(f"lost-{suffix}-3"), "reason")
            assert reason == b"expired_in_buffer"
            seen = await losses.read(redis, group)
            assert seen.total == 7
            assert [(r.partition, r.first - base, r.end - base) for r in seen.ranges] == [
                (2, 3, 8), (2, 8, 10)
            ]  # fmt: skip
        finally:
            await redis.aclose()

    asyncio.run(scenario())


def test_guard_shares_one_projection_and_honours_a_sales_limit(any_redis: RedisSettings) -> None:
    group = f"g-{uuid.uuid4().hex[:6]}"
    settings = load_settings(
        environ={
            "FLASHGATE_DRAIN_GROUP_ID": group,
            "FLASHGATE_DRAIN_RATE_PER_S": "10",
            "FLASHGATE_KAFKA_RETENTION_MS": "100000",
            "FLASHGATE_GATEWAY_BUFFER_SAFETY_S": "40",
        }
    )
    sale = f"s-{uuid.uuid4().hex[:6]}"

    async def scenario() -> None:
        redis = create_redis(any_redis)
        try:
            now = time.time()
            report = ConsumerReport(
                consumer_id="c", configured_rate=10.0, override_rate=None, effective_rate=10.0,
                paused=False, reason="schedule", schedule="", delivered_per_second=10.0,
                updated_at=now, rate_per_s=10.0,
            )  # fmt: skip
            # 500 waiting at 10/s: an order now is delivered in 50.1 s, within 100 - 40.
            await publish(redis, group, report, {0: (0, 500)}, {0: now - 5})
            first, second = BacklogGuard(redis, settings), BacklogGuard(redis, settings)
            assert await first.check(sale) is None
            shared = await redis.get(projection_key(group))
            assert shared is not None
            assert await second.check(sale) is None
            assert await redis.get(projection_key(group)) == shared  # read, not recomputed
            # The sale asks for delivery within 30 s: 50.1 s is 20.1 s too late.
            await redis.hset(SaleKeys.of(sale).config, "deliver_within_s", "30")
            fresh = BacklogGuard(redis, settings)
            full = await fresh.check(sale)
            assert full is not None and full.refuse and full.retry_after_s == 21
            # Paused: what counts is the delivery if ops resumed now.
            await DrainControl(redis, group).set_paused(True)
            await redis.delete(projection_key(group))
            paused = BacklogGuard(redis, settings)
            full = await paused.check(sale)
            assert full is not None and full.retry_after_s == PAUSED_RETRY_AFTER_S
            assert await paused.check(f"other-{sale}") is None  # 50.1 s fits 60 s
            await redis.hset(SaleKeys.of(sale).config, "on_backlog_full", "accept")
            accepting = BacklogGuard(redis, settings)
            full = await accepting.check(sale)
            assert full is not None and not full.refuse
        finally:
            await redis.aclose()

    asyncio.run(scenario())


def test_the_drain_never_resets_to_latest() -> None:
    settings = load_settings(environ={})
    assert consumer_config(settings.kafka, settings.drain, "c")["auto.offset.reset"] == "earliest"


def test_a_crowd_reads_a_sales_guard_settings_once(redis_server: RedisServer) -> None:
    """1,000 orders of one sale at once, on a gateway that has not read its settings yet:
    one Redis read between them, not one each (that took every pooled connection from
    the admissions in the full suite's 1,000-buyer race)."""
    settings = load_settings(environ={"FLASHGATE_DRAIN_GROUP_ID": f"g-{uuid.uuid4().hex[:6]}"})
    sale = f"s-{uuid.uuid4().hex[:6]}"

    async def scenario() -> int:
        redis = create_redis(RedisSettings(url=redis_server.url))
        try:
            await redis.hset(SaleKeys.of(sale).config, "deliver_within_s", "30")
            guard = BacklogGuard(redis, settings)
            before = await _hmget_calls(redis)
            policies = await asyncio.gather(*(guard._policy(sale) for _ in range(1000)))
            assert {policy.deliver_within_s for policy in policies} == {30.0}
            return await _hmget_calls(redis) - before
        finally:
            await redis.delete(SaleKeys.of(sale).config)
            await redis.aclose()

    assert asyncio.run(scenario()) == 1


async def _hmget_calls(redis: Any) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_hmget", {}).get("calls", 0))

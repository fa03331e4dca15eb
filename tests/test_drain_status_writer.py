"""Order statuses written in batches by the drain read back as OrderStatusStore wrote them."""

from __future__ import annotations

import asyncio

from flashgate.admission.keys import SaleKeys
from flashgate.order_status import OrderStatusStore
from flashgate.redis_client import create_redis
from flashgate.settings import RedisSettings
from order_consumer.status_writer import StatusWriter


def test_delivered_and_failed_statuses_and_the_sale_counter(any_redis: RedisSettings) -> None:
    async def scenario() -> None:
        redis = create_redis(any_redis)
        store = OrderStatusStore(redis, 3600)
        writer = StatusWriter(redis, 3600)
        try:
            await store.mark_accepted("A1", 100.0, sale_id="s-1", partition=0, offset=7)
            await store.mark_accepted("A2", 101.0, sale_id="s-1", partition=0, offset=8)
            writer.delivered("A1", 100.0, 105.5)
            writer.delivered("A1", 100.0, 106.0)  # a redelivery: counted once
            writer.failed("A2", 101.0, "backend answered 404: no route")
            assert await writer.flush()
            delivered = await store.get("A1")
            assert delivered is not None
            assert (delivered.status, delivered.delivered_at) == ("delivered", 106.0)
            assert (delivered.partition, delivered.offset) == (0, 7)
            failed = await store.get("A2")
            assert failed is not None
            assert (failed.status, failed.reason) == ("failed", "backend answered 404: no route")
            counter = await redis.hget(SaleKeys.of("s-1").counters, "delivered_orders")
            assert counter == b"1"
            assert 0 < await redis.ttl("order:A1") <= 3600
            assert writer.written == 3 and writer.backlog == 0
        finally:
            await redis.aclose()

    asyncio.run(scenario())

"""The settler against a real Redis: what happens after Kafka answers, whoever is waiting.

The producer's future is resolved by hand here (with what a delivery report
carries), so each case is exact: acknowledged, refused, overdue, and the
request that asked gone in between. Kafka itself is exercised end to end in
test_gateway_failures.py and the chaos suite.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from redis.asyncio import Redis

from flashgate.admission import admitter as admitter_module
from flashgate.admission import idempotency as idempotency_module
from flashgate.admission.admitter import Admitter, Reservation
from flashgate.admission.idempotency import IdempotencyStore
from flashgate.admission.sales import RateSpec, RatesSpec, SaleDefinition, SaleStore
from flashgate.errors import KafkaAckOverdue, KafkaUnavailable
from flashgate.ids import new_order_id
from flashgate.kafka.producer import DeliveredRecord
from flashgate.order_status import OrderStatusStore
from flashgate.redis_scripts.loader import RedisScripts
from flashgate.settings import SalesSettings
from flashgate.stack.redis_server import RedisServer
from gateway.settle import Produced, Settler
from gateway.soldout import SoldOutCache

OPEN = RatesSpec(*(RateSpec(per_second=0, burst=1) for _ in range(3)))


class Parts:
    def __init__(self, redis: Redis, batching: bool) -> None:
        self.redis = redis
        scripts = RedisScripts(
            redis, (*admitter_module.SCRIPTS, *idempotency_module.SCRIPTS, "mark_accepted")
        )
        self.sales = SaleStore(scripts)
        self.admitter = Admitter(scripts, reservation_ttl_ms=30_000, batching=False)
        self.statuses = OrderStatusStore(redis, 3600)
        self.idempotency = IdempotencyStore(scripts, ttl_s=3600, pending_ttl_s=60)
        self.settler = Settler(
            scripts,
            self.admitter,
            self.statuses,
            self.idempotency,
            SoldOutCache(1.0),
            batching=batching,
            batch_max=64,
        )

    async def reserve(self, user: str = "u1") -> Reservation:
        reservation = Reservation(new_order_id(), "s1", "A", 1, user)
        assert (await self.admitter.admit(reservation, "1.1.1.1")).admitted
        return reservation

    async def stock(self) -> tuple[int, int, int]:
        report = await self.sales.report("s1")
        assert report is not None
        sku = report.skus["A"]
        return sku.remaining, sku.reserved, sku.accepted


@asynccontextmanager
async def parts(url: str, batching: bool) -> AsyncIterator[Parts]:
    redis = Redis.from_url(url)
    found = Parts(redis, batching)
    await found.sales.load("s1", SaleDefinition(stock={"A": 5}, rates=OPEN), SalesSettings())
    try:
        yield found
    finally:
        await found.settler.aclose()
        await redis.flushdb()
        await redis.aclose()


@pytest.mark.parametrize("batching", [True, False])
def test_an_acknowledged_order_is_settled_even_if_its_request_is_gone(
    redis_server: RedisServer, batching: bool
) -> None:
    async def scenario() -> None:
        async with parts(redis_server.url, batching) as p:
            loop = asyncio.get_running_loop()
            kept, dropped = await p.reserve("u1"), await p.reserve("u2")
            claim = await p.idempotency.begin("anon", "key-2", "digest", dropped.reservation_id)
            futures = [loop.create_future(), loop.create_future()]
            outcomes = [
                p.settler.follow(futures[0], Produced(kept, 1.0)),
                p.settler.follow(futures[1], Produced(dropped, 2.0, claim=claim, answer=b"{}")),
            ]
            outcomes[1].cancel()  # the client of the second order hung up mid-produce
            futures[0].set_result(DeliveredRecord("orders", 3, 41))
            futures[1].set_result(DeliveredRecord("orders", 4, 42))
            delivered = await outcomes[0]
            assert isinstance(delivered, DeliveredRecord)
            assert (delivered.partition, delivered.offset) == (3, 41)
            await p.settler.aclose()
            assert await p.stock() == (3, 0, 2)
            for reservation, offset in ((kept, 41), (dropped, 42)):
                status = await p.statuses.get(reservation.reservation_id)
                assert status is not None and status.status == "accepted"
                assert status.offset == offset
            # The gone request's Idempotency-Key holds its answer for the retry.
            again = await p.idempotency.begin("anon", "key-2", "digest", new_order_id())
            assert (again.state, again.status, again.answer) == ("done", 202, b"{}")

    asyncio.run(scenario())


def test_a_refused_order_gives_back_its_units_unless_a_record_may_exist(
    redis_server: RedisServer,
) -> None:
    async def scenario() -> None:
        async with parts(redis_server.url, batching=True) as p:
            loop = asyncio.get_running_loop()
            refused, overdue, held = [await p.reserve(f"u{i}") for i in range(3)]
            cases = [
                (refused, False, KafkaUnavailable("Kafka refused the record")),
                (overdue, False, KafkaAckOverdue("no delivery report")),
                (held, True, KafkaUnavailable("Kafka refused the record")),
            ]
            for reservation, was_held, failure in cases:
                produced: asyncio.Future[DeliveredRecord] = loop.create_future()
                outcome = p.settler.follow(produced, Produced(reservation, 1.0, held=was_held))
                produced.set_exception(failure)
                assert await outcome is failure
            # Only the plainly refused order's unit is back; the other two wait for
            # the reaper, which looks for their records in Kafka first.
            assert await p.stock() == (3, 2, 0)

    asyncio.run(scenario())


def test_a_refused_order_whose_request_is_gone_frees_its_key(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        async with parts(redis_server.url, batching=True) as p:
            loop = asyncio.get_running_loop()
            reservation = await p.reserve()
            claim = await p.idempotency.begin("anon", "k", "digest", reservation.reservation_id)
            produced: asyncio.Future[DeliveredRecord] = loop.create_future()
            outcome = p.settler.follow(produced, Produced(reservation, 1.0, claim=claim))
            outcome.cancel()
            produced.set_exception(KafkaUnavailable("Kafka refused the record"))
            await p.settler.aclose()
            assert await p.stock() == (5, 0, 0)
            # Free at once, not after its lease: the retry starts afresh (same order id).
            again = await p.idempotency.begin("anon", "k", "digest", new_order_id())
            assert (again.state, again.order_id) == ("new", reservation.reservation_id)

    asyncio.run(scenario())

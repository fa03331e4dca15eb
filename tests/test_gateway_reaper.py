"""The reaper against a real Kafka broker and Redis: expired reservations are settled by
what Kafka holds, never by the clock alone.

A gateway killed between Kafka's ack and its confirm leaves a reservation whose
order is in Kafka: the reaper must confirm it (returning its unit would sell
it twice). One killed before the ack leaves a reservation with no record: the
reaper returns it to stock. Kafka unreadable: the units stay held.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from confluent_kafka import Producer
from redis.asyncio import Redis

from flashgate.admission import admitter as admitter_module
from flashgate.admission.admitter import Admitter, Reservation
from flashgate.admission.sales import RateSpec, RatesSpec, SaleDefinition, SaleStore
from flashgate.ids import new_order_id
from flashgate.kafka.record_finder import find_keys
from flashgate.order_status import OrderStatusStore
from flashgate.redis_scripts.loader import RedisScripts
from flashgate.settings import KafkaSettings, SalesSettings
from flashgate.stack.ports import free_port
from gateway.reaper import CLOCK_SLACK_MS, Reaper, ReapReport
from tests.services import ServiceEnv

OPEN = RatesSpec(*(RateSpec(per_second=0, burst=1) for _ in range(3)))
TTL_MS = 1_000
PRODUCE_TIMEOUT_MS = 500


def _produce(kafka: KafkaSettings, keys: list[str]) -> None:
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "acks": "all"})
    for key in keys:
        producer.produce(kafka.orders_topic, value=b"{}", key=key.encode())
    assert producer.flush(10) == 0


@asynccontextmanager
async def _reaping(
    env: ServiceEnv, find_in: KafkaSettings, sale_id: str
) -> AsyncIterator[tuple[Admitter, SaleStore, Reaper, OrderStatusStore]]:
    """A loaded sale (10 units of A), an admitter and a reaper searching `find_in`."""
    kafka = env.settings.kafka
    redis = Redis.from_url(env.variables["FLASHGATE_REDIS_URL"])
    try:
        scripts = RedisScripts(redis, admitter_module.SCRIPTS)
        sales = SaleStore(scripts)
        await sales.load(sale_id, SaleDefinition(stock={"A": 10}, rates=OPEN), SalesSettings())
        admitter = Admitter(scripts, reservation_ttl_ms=TTL_MS, batching=False)
        statuses = OrderStatusStore(redis, 3600)

        def find(keys: Collection[bytes], start_ms: int, end_ms: int) -> set[bytes]:
            return find_keys(find_in, kafka.orders_topic, keys, start_ms, end_ms, timeout_s=3)

        reaper = Reaper(
            admitter,
            sales,
            statuses,
            find,
            reservation_ttl_ms=TTL_MS,
            produce_timeout_ms=PRODUCE_TIMEOUT_MS,
        )
        yield admitter, sales, reaper, statuses
    finally:
        await redis.aclose()


async def _stock(sales: SaleStore, sale_id: str) -> dict[str, int]:
    report = await sales.report(sale_id)
    assert report is not None
    sku = report.skus["A"]
    return {"remaining": sku.remaining, "reserved": sku.reserved, "accepted": sku.accepted}


async def _scenario(
    env: ServiceEnv, find_in: KafkaSettings, in_kafka: int, absent: int
) -> tuple[list[ReapReport], dict[str, Any]]:
    async with _reaping(env, find_in, "s1") as (admitter, sales, reaper, statuses):
        held = [
            Reservation(new_order_id(), "s1", "A", 1, f"u{i}") for i in range(in_kafka + absent)
        ]
        for reservation in held:
            assert (await admitter.admit(reservation, "127.0.0.1")).admitted
        # Their gateway died: the first `in_kafka` orders had reached Kafka (with
        # other orders around them), the rest never did. Nobody confirms or releases.
        noise = [new_order_id() for _ in range(50)]
        ids = [r.reservation_id for r in held[:in_kafka]]
        _produce(env.settings.kafka, noise[:25] + ids + noise[25:])
        reports = [await reaper.run_once()]  # before the deadline: nothing to do
        # Past the deadline but while a record could still arrive: still waiting.
        await asyncio.sleep(TTL_MS / 1000 + 0.1)
        reports.append(await reaper.run_once())
        await asyncio.sleep((PRODUCE_TIMEOUT_MS + CLOCK_SLACK_MS) / 1000)
        reports.append(await reaper.run_once())
        read = [await statuses.get(r.reservation_id) for r in held]
        found = [(s.status, s.reason) if s else None for s in read]
        # A retry of an order the reaper found (same Idempotency-Key, same order id) is
        # answered "accepted" and charges nothing; one of a reaped order places it again.
        if in_kafka and reports[-1].confirmed:
            assert (await admitter.admit(held[0], "127.0.0.1")).reason == "accepted"
        return reports, {**await _stock(sales, "s1"), "statuses": found}


def test_reaper_confirms_what_kafka_holds_and_returns_the_rest(service_env: ServiceEnv) -> None:
    kafka = service_env.settings.kafka
    started = time.monotonic()
    reports, stock = asyncio.run(_scenario(service_env, kafka, in_kafka=2, absent=3))
    assert reports[0] == ReapReport()
    assert reports[1] == ReapReport(waiting=5)
    assert reports[2] == ReapReport(confirmed=2, returned=3)
    # The two orders in Kafka keep their units: no unit can be sold twice.
    statuses = stock.pop("statuses")
    assert stock == {"remaining": 8, "reserved": 0, "accepted": 2}
    # What a shopper polling the status URL reads.
    assert statuses == [("accepted", None)] * 2 + [("failed", "not_stored")] * 3
    assert time.monotonic() - started < 30


def test_reaper_holds_stock_while_kafka_cannot_be_read(service_env: ServiceEnv) -> None:
    dead = msgspec.structs.replace(
        service_env.settings.kafka, bootstrap_servers=f"127.0.0.1:{free_port()}"
    )
    reports, stock = asyncio.run(_scenario(service_env, dead, in_kafka=1, absent=1))
    assert reports[2] == ReapReport(waiting=2)
    assert stock.pop("statuses") == [None, None]  # unsettled: nothing said yet
    assert stock == {"remaining": 8, "reserved": 2, "accepted": 0}


def test_reaper_finds_the_first_attempts_record_of_a_re_admitted_order(
    service_env: ServiceEnv,
) -> None:
    """A retry (same Idempotency-Key, so the same order id) re-admits an order whose
    first gateway died after Kafka's ack: the deadline is renewed, but the first
    record is older than the new window. The reaper must still find it (the order
    id's time bounds the search) and confirm it, not return its units."""

    async def scenario() -> tuple[ReapReport, dict[str, int]]:
        kafka = service_env.settings.kafka
        async with _reaping(service_env, kafka, "s2") as (admitter, sales, reaper, _):
            order = Reservation(new_order_id(), "s2", "A", 1, "u1")
            assert (await admitter.admit(order, "127.0.0.1")).admitted
            _produce(kafka, [order.reservation_id])  # acknowledged; its gateway then died
            await asyncio.sleep((PRODUCE_TIMEOUT_MS + 2 * CLOCK_SLACK_MS) / 1000 + 0.5)
            again = await admitter.admit(order, "127.0.0.1")  # the retry, whose produce fails
            assert again.admitted and again.held
            await asyncio.sleep((TTL_MS + PRODUCE_TIMEOUT_MS + CLOCK_SLACK_MS) / 1000 + 0.2)
            return await reaper.run_once(), await _stock(sales, "s2")

    report, stock = asyncio.run(scenario())
    assert report == ReapReport(confirmed=1)
    assert stock == {"remaining": 9, "reserved": 0, "accepted": 1}

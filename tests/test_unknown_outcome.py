"""Kafka's answer unknown, on a real broker: no oversell, no ghost order, late records fenced.

One broker for the module, reached only through `KafkaStallProxy`, so a test
can either pause the broker's process (SIGSTOP, as a long GC pause or a
network stall would) or hold back just the gateway's Produce requests while
every reader (the reaper, the drain) still reads the partition. Each test runs
a real gateway, consumer and reference backend against it and the session's
Redis, and checks what the backend stored against what each buyer was told.
"""

from __future__ import annotations

import asyncio
import signal
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flashgate.stack.kafka_broker import KafkaBroker
from flashgate.stack.ports import free_port
from flashgate.stack.redis_server import RedisServer
from tests.chaos_support import backend_rows, dead_lettered
from tests.gateway_client import OPEN_RATES, Answer, Client, new_env
from tests.kafka_stall_proxy import KafkaStallProxy, running_broker_behind_proxy
from tests.services import Services, admin_json, load_sale, wait_until

pytestmark = pytest.mark.e2e

# Shorter than any fault below, so that a stalled produce ends as an unknown outcome.
FAST_SETTLING = {
    "FLASHGATE_GATEWAY_PRODUCE_TIMEOUT_MS": "2000",
    "FLASHGATE_KAFKA_MESSAGE_TIMEOUT_MS": "2000",
    "FLASHGATE_GATEWAY_RESERVATION_TTL_S": "3",
    "FLASHGATE_GATEWAY_REAPER_INTERVAL_S": "0.5",
}
SETTLE_TIMEOUT_S = 90.0
WARM_UP_USER = "warm-up"


@pytest.fixture(scope="module")
def stalling_kafka(
    kafka_libs: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[KafkaBroker, KafkaStallProxy]]:
    with running_broker_behind_proxy(kafka_libs, tmp_path_factory.mktemp("stalling")) as pair:
        yield pair


@pytest.fixture
def stack(
    stalling_kafka: tuple[KafkaBroker, KafkaStallProxy], redis_server: RedisServer, tmp_path: Path
) -> Iterator[tuple[Services, KafkaBroker, KafkaStallProxy]]:
    broker, proxy = stalling_kafka
    env = new_env(broker, redis_server, tmp_path)
    env.variables.update(FAST_SETTLING)
    env.variables["FLASHGATE_DRAIN_HEALTH_PORT"] = str(free_port())
    services = Services(env)
    try:
        services.start_backend()
        services.start_consumer()
        services.start_gateway()
        yield services, broker, proxy
    finally:
        proxy.release()
        if broker.process is not None:
            broker.process.send(signal.SIGCONT)
        services.stop_all()


def _sale(services: Services, stock: dict[str, int], **fields: Any) -> str:
    sale_id = f"sale-{uuid.uuid4().hex[:8]}"
    load_sale(services.env, sale_id, {"stock": stock, "rates": OPEN_RATES, **fields})
    return sale_id


def _report(services: Services, sale_id: str) -> dict[str, Any]:
    report: dict[str, Any] = admin_json(services.env, "GET", f"/admin/v1/sales/{sale_id}")
    return report


async def _statuses(services: Services, order_ids: list[str]) -> dict[str, tuple[Any, Any]]:
    async with Client(services.env.gateway_url) as client:
        read = [await client.call("GET", f"/v1/orders/{o}") for o in order_ids]
    return {
        o: (a.body.get("status"), a.body.get("reason"))
        for o, a in zip(order_ids, read, strict=True)
    }


async def _warm_up(services: Services, url: str) -> None:
    """One order through the gateway before anything is held: its producer then has its
    idempotent producer id, so holding the epoch bump (InitProducerId) cannot also hold
    the first id request and keep the held order from ever being sent."""
    sale_id = _sale(services, {"W": 1})
    async with Client(url) as client:
        answer = await client.order(sale_id=sale_id, sku="W", user_id=WARM_UP_USER)
    assert answer.status == 202, answer


def _settled(services: Services, sale_id: str) -> bool:
    """No reservation left open: every order is confirmed or its units returned."""
    report = _report(services, sale_id)
    return report["pending_reservations"] == 0 and all(
        sku["reserved"] == 0 for sku in report["skus"].values()
    )


def _stored(services: Services) -> dict[str, str]:
    """order_id -> user_id of what the backend stored (warm-up orders left out)."""
    db = services.env.root / "backend.sqlite3"
    rows = backend_rows(db) if db.exists() else []
    return {order_id: user for order_id, user in rows if user != WARM_UP_USER}


def test_broker_paused_past_the_produce_timeout_oversells_nothing(
    stack: tuple[Services, KafkaBroker, KafkaStallProxy],
) -> None:
    """The issue's run: buyers who take the first answer as final, the broker's process
    paused for longer than message.timeout.ms mid-burst. The backend stores at most
    the stock; every order it stored was answered 202 or outcome_unknown and reads
    accepted/delivered; every outcome_unknown order that reads failed is absent."""
    services, broker, _ = stack
    assert broker.process is not None
    stock = 120
    sale_id = _sale(services, {"A": stock}, per_user_max=1)
    buyers = 400

    async def burst() -> dict[str, Answer]:
        answers: dict[str, Answer] = {}
        async with Client(services.env.gateway_url, connections=64) as client:
            queue: asyncio.Queue[int] = asyncio.Queue()
            for i in range(buyers):
                queue.put_nowait(i)

            forty_accepted = asyncio.Event()

            async def buyer() -> None:
                while not queue.empty():
                    user = f"buyer-{queue.get_nowait()}"
                    answers[user] = await client.order(
                        sale_id=sale_id, sku="A", user_id=user,
                        headers={"Idempotency-Key": uuid.uuid4().hex},
                    )  # fmt: skip
                    if sum(a.status == 202 for a in answers.values()) >= 40:
                        forty_accepted.set()

            async def pause_mid_burst() -> None:
                await forty_accepted.wait()
                assert broker.process is not None
                broker.process.send(signal.SIGSTOP)
                try:
                    await asyncio.sleep(5)  # the fault: 2.5x message.timeout.ms
                finally:
                    broker.process.send(signal.SIGCONT)

            await asyncio.gather(pause_mid_burst(), *(buyer() for _ in range(64)))
        return answers

    answers = asyncio.run(burst())
    unknown = {
        str(a.body["order_id"]): user
        for user, a in answers.items()
        if a.status == 503 and a.body["error"] == "outcome_unknown"
    }
    accepted = {str(a.body["order_id"]): user for user, a in answers.items() if a.status == 202}
    assert unknown, "the pause produced no unknown outcome: the test did not test anything"
    assert wait_until(lambda: _settled(services, sale_id), SETTLE_TIMEOUT_S)
    statuses = asyncio.run(_statuses(services, list(unknown)))
    settled_accepted = {o for o, (s, _) in statuses.items() if s in ("accepted", "delivered")}
    not_stored = {o for o, s in statuses.items() if s == ("failed", "not_stored")}
    assert settled_accepted | not_stored == set(unknown), statuses
    expected = set(accepted) | settled_accepted
    assert wait_until(lambda: expected <= set(_stored(services)), SETTLE_TIMEOUT_S)
    stored = _stored(services)
    assert len(stored) <= stock
    # No ghost: every stored order was answered 202, or outcome_unknown and reads accepted.
    assert set(stored) <= expected, set(stored) - expected
    assert not (set(stored) & not_stored)
    report = _report(services, sale_id)
    assert report["skus"]["A"]["accepted"] == len(expected) <= stock


def test_a_record_written_after_the_reapers_look_is_fenced(
    stack: tuple[Services, KafkaBroker, KafkaStallProxy],
) -> None:
    """The gateway's Produce is held past the reaper's window: the reaper reads the
    partition, proves the record absent and returns the unit; the unit is sold to
    another buyer. Only then does the broker write the first record. The drain must
    dead-letter it (late_record_after_release), not deliver it: the unit is sold once."""
    services, _, proxy = stack
    env = services.env
    sale_id = _sale(services, {"A": 1}, per_user_max=1)
    first_key = {"Idempotency-Key": "late-record-1"}

    async def scenario() -> tuple[Answer, dict[str, tuple[Any, Any]], Answer, Answer]:
        await _warm_up(services, env.gateway_url)
        async with Client(env.gateway_url) as client:
            proxy.hold_produce()
            first = await client.order(headers=first_key, sale_id=sale_id, user_id="first")
            assert proxy.held_produce_requests >= 1, "the order's Produce was never sent"
            order_id = str(first.body.get("order_id"))

            async def settled_absent() -> bool:
                return (await _statuses(services, [order_id]))[order_id] == (
                    "failed",
                    "not_stored",
                )

            deadline = asyncio.get_running_loop().time() + SETTLE_TIMEOUT_S
            while not await settled_absent():
                assert asyncio.get_running_loop().time() < deadline, "never settled"
                await asyncio.sleep(0.2)
            status = await _statuses(services, [order_id])
            proxy.release()  # the broker now appends the first record: late
            second = await client.order(sale_id=sale_id, user_id="second")
            retried = await client.order(headers=first_key, sale_id=sale_id, user_id="first")
            return first, status, second, retried

    first, status, second, retried = asyncio.run(scenario())
    assert (first.status, first.body["error"]) == (503, "outcome_unknown"), first
    first_id, second_id = str(first.body["order_id"]), str(second.body.get("order_id"))
    assert status == {first_id: ("failed", "not_stored")}
    assert second.status == 202, second
    # The first buyer retries its key: the order failed, and the unit is gone now.
    assert (retried.status, retried.body["error"]) == (409, "sold_out"), retried
    bootstrap = env.variables["FLASHGATE_KAFKA_BOOTSTRAP_SERVERS"]
    dlq_topic = env.variables["FLASHGATE_KAFKA_DLQ_TOPIC"]

    def fenced() -> bool:
        return dead_lettered(bootstrap, dlq_topic, timeout_s=5).get(first_id) is not None

    assert wait_until(fenced, SETTLE_TIMEOUT_S)
    assert dead_lettered(bootstrap, dlq_topic)[first_id] == "late_record_after_release"
    assert wait_until(lambda: second_id in _stored(services), SETTLE_TIMEOUT_S)
    assert set(_stored(services)) == {second_id}
    report = _report(services, sale_id)
    assert report["skus"]["A"] == {"loaded": 1, "remaining": 0, "reserved": 0, "accepted": 1}
    assert report["fenced_orders"] == 1
    metrics = urllib.request.urlopen(
        f"http://127.0.0.1:{env.variables['FLASHGATE_DRAIN_HEALTH_PORT']}/metrics", timeout=5
    ).read()
    assert b"flashgate_drain_fenced_total 1.0" in metrics
    assert asyncio.run(_statuses(services, [first_id])) == {first_id: ("failed", "not_stored")}


def test_a_retry_after_the_reaper_confirmed_its_order_is_charged_once(
    stack: tuple[Services, KafkaBroker, KafkaStallProxy],
) -> None:
    """A gateway dies between producing an order and hearing Kafka's ack (its record
    does reach Kafka); another gateway's reaper finds the record and confirms the
    order. The buyer's retry (same Idempotency-Key, so the same order id) comes after
    that: it is answered 202 for the same order and charges the stock nothing more."""
    services, _, proxy = stack
    env = services.env
    sale_id = _sale(services, {"A": 5}, per_user_max=5)
    key = {"Idempotency-Key": "retry-after-confirm"}
    # A second gateway on its own ports, the one that dies.
    port = free_port()
    dying = services.start_gateway(
        FLASHGATE_GATEWAY_PORT=str(port), FLASHGATE_ADMIN_PORT=str(free_port())
    )

    async def killed_mid_produce(url: str) -> None:
        await _warm_up(services, url)
        async with Client(url) as client:
            proxy.hold_produce()
            pending = asyncio.create_task(
                client.order(headers=key, sale_id=sale_id, user_id="u1", quantity=2)
            )
            assert await asyncio.to_thread(proxy.wait_for_held_produce, 1, 10.0)
            dying.kill()  # SIGKILL: no ack heard, no confirm, no answer
            await asyncio.gather(pending, return_exceptions=True)
            proxy.release()  # the record reaches Kafka after all

    asyncio.run(killed_mid_produce(f"http://127.0.0.1:{port}"))
    services.running.remove(dying)

    def adopted() -> bool:
        skus = _report(services, sale_id)["skus"]["A"]
        return bool(skus["accepted"] == 2 and skus["reserved"] == 0)

    assert wait_until(adopted, SETTLE_TIMEOUT_S)

    async def retry_until_taken_over() -> Answer:
        async with Client(env.gateway_url) as client:
            deadline = asyncio.get_running_loop().time() + 30
            while True:  # the dead claim's lease runs out after produce timeout + 5 s
                answer = await client.order(headers=key, sale_id=sale_id, user_id="u1", quantity=2)
                if "still running" not in answer.body.get("message", ""):
                    return answer
                assert asyncio.get_running_loop().time() < deadline, answer
                await asyncio.sleep(0.5)

    retried = asyncio.run(retry_until_taken_over())
    assert retried.status == 202, retried
    assert retried.headers.get("Idempotent-Replayed") == "true"
    order_id = str(retried.body["order_id"])
    skus = _report(services, sale_id)["skus"]["A"]
    assert skus == {"loaded": 5, "remaining": 3, "reserved": 0, "accepted": 2}
    assert wait_until(lambda: order_id in _stored(services), SETTLE_TIMEOUT_S)
    assert list(_stored(services)) == [order_id]

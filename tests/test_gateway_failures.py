"""Failures on a real gateway: Kafka unreachable, the in-flight cap, a gateway killed
mid-produce, and SIGTERM in the middle of a burst."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter

from flashgate.stack.ports import free_port
from tests.gateway_client import OPEN_RATES, Answer, Client, topic_size
from tests.services import Services, admin_json, load_sale, wait_until


def _sale(services: Services, **fields: object) -> str:
    sale_id = f"sale-{uuid.uuid4().hex[:8]}"
    load_sale(services.env, sale_id, {"rates": OPEN_RATES, **fields})
    return sale_id


def _report(services: Services, sale_id: str) -> dict[str, object]:
    report: dict[str, object] = admin_json(services.env, "GET", f"/admin/v1/sales/{sale_id}")
    return report


async def _wait_reserved(services: Services, sale_id: str, units: int, timeout_s: float) -> None:
    """Until the sale holds `units` reserved: the orders have passed admission and are
    waiting on Kafka's ack (a reservation is made before the produce, settled after)."""
    deadline = time.monotonic() + timeout_s
    while True:
        report = await asyncio.to_thread(_report, services, sale_id)
        reserved = report["skus"]["A"]["reserved"]  # type: ignore[index]
        if reserved == units:
            return
        assert time.monotonic() < deadline, f"reserved {reserved}, waited for {units}"
        await asyncio.sleep(0.05)


def test_kafka_unreachable_answers_outcome_unknown_and_the_reaper_settles_it(
    services: Services,
) -> None:
    """Every produce times out in flight: Kafka's answer is unknown, so the units stay
    reserved (a stalled broker may still write the record) and the client is told
    `outcome_unknown` with its order id; a retry of the same Idempotency-Key gets the
    same answer while the order is pending. Once a gateway's reaper can read Kafka
    and proves the record absent, the units return, the status reads failed /
    not_stored, and the retry places the order (same order id)."""
    dead_kafka = services.start_gateway(
        # Nothing listens on this port: every produce times out after 1.5 s.
        FLASHGATE_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",
        FLASHGATE_KAFKA_MESSAGE_TIMEOUT_MS="1500",
        FLASHGATE_GATEWAY_PRODUCE_TIMEOUT_MS="1500",
        FLASHGATE_GATEWAY_IN_FLIGHT_MAX="4",
        FLASHGATE_GATEWAY_RESERVATION_TTL_S="2",
    )
    sale_id = _sale(services, stock={"A": 5})
    key = {"Idempotency-Key": "kafka-down-1"}

    async def scenario() -> tuple[list[Answer], list[Answer], Answer, Answer]:
        async with Client(services.env.gateway_url) as client:
            slow = [
                asyncio.create_task(client.order(headers=key, sale_id=sale_id)),
                *(
                    asyncio.create_task(client.order(sale_id=sale_id, user_id=f"u{i}"))
                    for i in range(3)
                ),
            ]
            await _wait_reserved(services, sale_id, 4, timeout_s=10)
            assert not any(task.done() for task in slow), "the produce must still be in flight"
            started = time.monotonic()
            shed = await asyncio.gather(*(client.order(sale_id=sale_id) for _ in range(3)))
            assert time.monotonic() - started < 1.0, "the in-flight cap must answer at once"
            answers = await asyncio.gather(*slow)
            retried = await client.order(headers=key, sale_id=sale_id)
            ready = await client.call("GET", "/readyz")
            return answers, shed, retried, ready

    answers, shed, retried, ready = asyncio.run(scenario())
    for answer in shed:
        assert (answer.status, answer.body["error"]) == (503, "unavailable"), answer
        assert "capacity" in answer.body["message"]
    for answer in [*answers, retried]:
        assert (answer.status, answer.body["error"]) == (503, "outcome_unknown"), answer
        assert int(answer.headers["Retry-After"]) >= 1
        assert answer.body["status_url"] == f"/v1/orders/{answer.body['order_id']}"
    # The retry is the same order, still pending: answered alike, nothing new produced.
    assert retried.body["order_id"] == answers[0].body["order_id"]
    assert (ready.status, ready.body["checks"]["kafka"]) == (503, False)
    report = _report(services, sale_id)
    assert report["skus"] == {"A": {"loaded": 5, "remaining": 1, "reserved": 4, "accepted": 0}}
    order_ids = [str(a.body["order_id"]) for a in answers]

    async def statuses() -> list[tuple[object, object]]:
        async with Client(services.env.gateway_url) as client:
            read = [await client.call("GET", f"/v1/orders/{o}") for o in order_ids]
        return [(a.body.get("status"), a.body.get("reason")) for a in read]

    assert asyncio.run(statuses()) == [("pending", None)] * 4

    # A gateway that can read Kafka settles them: not there, so the units return.
    dead_kafka.stop()
    services.running.remove(dead_kafka)
    services.start_gateway(FLASHGATE_GATEWAY_REAPER_INTERVAL_S="0.5")

    def settled() -> bool:
        return _report(services, sale_id)["skus"]["A"]["remaining"] == 5  # type: ignore[index,no-any-return]

    assert wait_until(settled, timeout_s=30)
    assert asyncio.run(statuses()) == [("failed", "not_stored")] * 4

    async def retry() -> Answer:
        async with Client(services.env.gateway_url) as client:
            return await client.order(headers=key, sale_id=sale_id)

    placed = asyncio.run(retry())
    assert placed.status == 202, placed
    assert placed.body["order_id"] == order_ids[0]
    replayed = asyncio.run(retry())
    assert (replayed.status, replayed.body["order_id"]) == (202, order_ids[0])
    assert replayed.headers.get("Idempotent-Replayed") == "true"
    skus = _report(services, sale_id)["skus"]
    assert skus == {"A": {"loaded": 5, "remaining": 4, "reserved": 0, "accepted": 1}}


def test_killed_gateway_does_not_leak_stock(services: Services) -> None:
    dead_kafka = services.start_gateway(
        FLASHGATE_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",
        FLASHGATE_KAFKA_MESSAGE_TIMEOUT_MS="30000",
        FLASHGATE_GATEWAY_PRODUCE_TIMEOUT_MS="30000",
        FLASHGATE_GATEWAY_RESERVATION_TTL_S="2",
    )
    sale_id = _sale(services, stock={"A": 3})

    async def hang() -> None:
        async with Client(services.env.gateway_url) as client:
            pending = asyncio.create_task(client.order(sale_id=sale_id, quantity=2))
            await _wait_reserved(services, sale_id, 2, timeout_s=10)
            assert not pending.done(), "the produce must still be in flight"
            dead_kafka.kill()  # SIGKILL between reservation and Kafka's ack
            await asyncio.gather(pending, return_exceptions=True)

    asyncio.run(hang())
    services.running.remove(dead_kafka)
    services.start_gateway(FLASHGATE_GATEWAY_REAPER_INTERVAL_S="0.5")
    assert _report(services, sale_id)["skus"]["A"]["reserved"] == 2  # type: ignore[index]

    def healed() -> bool:
        skus = _report(services, sale_id)["skus"]
        return skus["A"]["remaining"] == 3  # type: ignore[index,no-any-return]

    # After the 2 s TTL, once no record of it can still reach Kafka (the produce
    # timeout plus the reaper's clock slack), the reaper finds none and returns it,
    # with no order for the sale.
    assert wait_until(healed, timeout_s=20)


def test_failed_retry_of_a_dead_gateways_order_keeps_its_units(services: Services) -> None:
    """A gateway dies between reserving an order and hearing from Kafka; the client's
    retry (same Idempotency-Key, so the same order id) reaches another gateway, whose
    produce fails. The first attempt's record may be in Kafka, so the retry must not
    return the units: the reaper settles them once Kafka can be read."""
    dead_kafka = {
        "FLASHGATE_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "FLASHGATE_KAFKA_MESSAGE_TIMEOUT_MS": "1500",
        "FLASHGATE_GATEWAY_PRODUCE_TIMEOUT_MS": "1500",
    }
    first = services.start_gateway(**dead_kafka)
    sale_id = _sale(services, stock={"A": 5})
    key = {"Idempotency-Key": "dies-mid-produce"}

    async def killed_mid_produce() -> None:
        async with Client(services.env.gateway_url) as client:
            pending = asyncio.create_task(client.order(headers=key, sale_id=sale_id, quantity=2))
            await _wait_reserved(services, sale_id, 2, timeout_s=10)
            assert not pending.done(), "the produce must still be in flight"
            first.kill()
            await asyncio.gather(pending, return_exceptions=True)

    asyncio.run(killed_mid_produce())
    services.running.remove(first)
    services.start_gateway(**dead_kafka)

    async def retry_until_taken_over() -> Answer:
        async with Client(services.env.gateway_url) as client:
            deadline = time.monotonic() + 20
            while True:  # the dead claim's lease runs out after produce timeout + 5 s
                answer = await client.order(headers=key, sale_id=sale_id, quantity=2)
                if "still running" not in answer.body.get("message", ""):
                    return answer
                assert time.monotonic() < deadline, answer
                await asyncio.sleep(0.5)

    retried = asyncio.run(retry_until_taken_over())
    # The first attempt's record may be in Kafka: whatever this produce met, the
    # outcome of the order is unknown until the reaper looks.
    assert (retried.status, retried.body["error"]) == (503, "outcome_unknown"), retried
    report = _report(services, sale_id)
    assert report["skus"] == {"A": {"loaded": 5, "remaining": 3, "reserved": 2, "accepted": 0}}


def test_sigterm_mid_burst_loses_nothing_accepted(services: Services) -> None:
    gateway = services.start_gateway()
    sale_id = _sale(services, stock={"A": 10_000})
    env = services.env
    bootstrap = env.variables["FLASHGATE_KAFKA_BOOTSTRAP_SERVERS"]
    topic = env.variables["FLASHGATE_KAFKA_ORDERS_TOPIC"]
    before = topic_size(bootstrap, topic)

    async def burst() -> tuple[list[Answer | BaseException], int]:
        async with Client(env.gateway_url, connections=50) as client:
            tasks = [
                asyncio.create_task(client.order(sale_id=sale_id, user_id=f"u{i}"))
                for i in range(400)
            ]
            # Mid-burst means some orders answered and others not yet: SIGTERM then.
            deadline = time.monotonic() + 20
            while sum(task.done() for task in tasks) < 20:
                assert time.monotonic() < deadline, "the gateway answered too few orders"
                await asyncio.sleep(0.005)
            unanswered = sum(not task.done() for task in tasks)
            gateway.send(signal.SIGTERM)
            return await asyncio.gather(*tasks, return_exceptions=True), unanswered

    answers, unanswered = asyncio.run(burst())
    assert unanswered > 0, "the whole burst was answered before SIGTERM: it tested nothing"
    assert gateway.wait(20) == 0
    accepted = [a for a in answers if isinstance(a, Answer) and a.status == 202]
    kinds = Counter(a.status if isinstance(a, Answer) else type(a).__name__ for a in answers)
    assert accepted, kinds
    assert all(a.status in (202, 503) for a in answers if isinstance(a, Answer)), kinds
    # Every 202 is in Kafka. Kafka may hold a few more: orders whose answer was lost
    # when Hypercorn closed a connection it took for idle (the client saw a
    # disconnect, never a 202; a retry with its Idempotency-Key gets the answer).
    records = topic_size(bootstrap, topic) - before
    lost_answers = kinds["ServerDisconnectedError"] + kinds["ClientOSError"]
    assert len(accepted) <= records <= len(accepted) + lost_answers, kinds
    # Every order in Kafka was confirmed before the process exited: nothing is left
    # reserved that would return to stock, so nothing can be oversold.
    services.running.remove(gateway)
    services.start_gateway()
    report = _report(services, sale_id)
    assert report["accepted_orders"] == records
    assert report["skus"]["A"]["reserved"] == 0  # type: ignore[index]


def test_redis_unreachable_gives_503_never_500(services: Services) -> None:
    services.start_gateway(FLASHGATE_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")

    async def scenario() -> list[Answer]:
        async with Client(services.env.gateway_url) as client:
            return [
                await client.order(sale_id="s1"),
                await client.order(headers={"Idempotency-Key": "k1"}, sale_id="s1"),
                await client.call("GET", "/v1/orders/01M877WDJG0AMZ2ZWZ16SZFPPE"),
                await client.call("GET", "/readyz"),
            ]

    answers = asyncio.run(scenario())
    assert [a.status for a in answers] == [503, 503, 503, 503]
    assert all(a.body.get("error") == "unavailable" for a in answers[:3])
    assert answers[3].body["checks"]["redis"] is False

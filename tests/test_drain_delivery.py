"""Deliver or dead-letter: the fate of an order, decided against a scripted backend.

The backend here is a stand-in for answers (pure logic); the real backend is
exercised by tests/test_drain_e2e.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from tenacity import wait_fixed

from order_consumer.adaptive import AdaptiveConfig, AdaptiveLimit
from order_consumer.backend_gate import BackendGate, GateState
from order_consumer.delivery import Abandoned, Delivered, Deliverer, DeliveryState, Rejected
from order_consumer.errors import BackendRefuses, BackendUnavailable, OrderRejected
from order_consumer.refusals import RefusalBreaker, StormLetter

Answer = Callable[[str], None]


class ScriptedBackend:
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.calls: list[str] = []

    async def deliver(self, order_id: str, body: bytes) -> None:
        self.calls.append(order_id)
        await asyncio.sleep(0)
        self.answer(order_id)


class NoLimit:
    async def acquire(self) -> None:
        return None


def ok(order_id: str) -> None:
    return None


def server_error(order_id: str) -> None:
    raise BackendUnavailable("backend answered 500: boom", None, 500)


def refused(order_id: str) -> None:
    raise BackendUnavailable("backend unreachable: refused")


def make(
    backend: ScriptedBackend, max_attempts: int = 3, storm_orders: int = 20
) -> tuple[Deliverer, BackendGate, asyncio.Event]:
    gate = BackendGate(probe_timeout_s=1.0, initial_backoff_s=0.05, max_backoff_s=0.1)
    stopping = asyncio.Event()
    deliverer = Deliverer(
        backend, NoLimit(), gate, AdaptiveLimit(AdaptiveConfig()),
        breaker=RefusalBreaker(storm_orders, 60.0),
        max_attempts=lambda: max_attempts, stopping=stopping, wait=wait_fixed(0.01),
    )  # fmt: skip
    return deliverer, gate, stopping


def test_delivered_on_2xx() -> None:
    async def scenario() -> None:
        deliverer, gate, _ = make(ScriptedBackend(ok))
        state = DeliveryState()
        assert await deliverer.deliver("A", b"{}", state) == Delivered(1)
        assert gate.successes == 1 and not state.sending

    asyncio.run(scenario())


def test_a_per_order_4xx_is_rejected_at_once() -> None:
    def unprocessable(order_id: str) -> None:
        raise OrderRejected(422, "bad sku")

    async def scenario() -> None:
        backend = ScriptedBackend(unprocessable)
        deliverer, gate, _ = make(backend)
        result = await deliverer.deliver("A", b"{}", DeliveryState())
        assert result == Rejected("backend answered 422: bad sku", 1, 422)
        assert backend.calls == ["A"] and gate.closed

    asyncio.run(scenario())


def test_5xx_for_one_order_while_others_pass_is_rejected_after_max_attempts() -> None:
    async def scenario() -> None:
        backend = ScriptedBackend(lambda o: server_error(o) if o == "BAD" else None)
        deliverer, gate, _ = make(backend, max_attempts=3)

        async def others() -> None:
            for i in range(200):
                await deliverer.deliver(f"good-{i}", b"{}", DeliveryState())
                await asyncio.sleep(0.001)

        traffic = asyncio.create_task(others())
        result = await asyncio.wait_for(deliverer.deliver("BAD", b"{}", DeliveryState()), 5)
        traffic.cancel()
        assert isinstance(result, Rejected)
        assert result.attempts == 3 and "500" in result.reason
        assert gate.closed

    asyncio.run(scenario())


@pytest.mark.parametrize("failure", [server_error, refused])
def test_backend_down_trips_the_gate_and_the_order_waits(failure: Answer) -> None:
    async def scenario() -> None:
        down = True
        backend = ScriptedBackend(lambda o: failure(o) if down else None)
        deliverer, gate, _ = make(backend, max_attempts=2)
        delivery = asyncio.create_task(deliverer.deliver("A", b"{}", DeliveryState()))
        for _ in range(100):
            await asyncio.sleep(0.01)
            if gate.state is not GateState.CLOSED:
                break
        assert gate.state is not GateState.CLOSED
        await asyncio.sleep(0.3)  # several probes fail meanwhile; never dead-lettered
        assert not delivery.done()
        down = False
        result = await asyncio.wait_for(delivery, 2)
        assert isinstance(result, Delivered) and result.attempts > 2
        assert gate.closed

    asyncio.run(scenario())


def test_stopping_abandons_an_order_not_sent() -> None:
    async def scenario() -> None:
        deliverer, _, stopping = make(ScriptedBackend(refused), max_attempts=50)
        delivery = asyncio.create_task(deliverer.deliver("A", b"{}", DeliveryState()))
        await asyncio.sleep(0.05)
        stopping.set()
        with pytest.raises(Abandoned):
            await asyncio.wait_for(delivery, 2)

    asyncio.run(scenario())


def test_gate_half_open_lets_exactly_one_probe_through() -> None:
    async def scenario() -> None:
        gate = BackendGate(probe_timeout_s=5.0, initial_backoff_s=0.05)
        gate.trip("test")
        waiters = [asyncio.create_task(gate.permit()) for _ in range(5)]
        await asyncio.sleep(0.15)
        assert sum(w.done() for w in waiters) == 1
        gate.succeeded()
        await asyncio.wait_for(asyncio.gather(*waiters), 1)
        assert gate.closed

    asyncio.run(scenario())


def test_a_refusal_of_every_order_holds_it_at_once_and_never_rejects_it() -> None:
    async def scenario() -> None:
        refusing = True

        def answer(order_id: str) -> None:
            if refusing:
                raise BackendRefuses(401, "token expired")

        backend = ScriptedBackend(answer)
        deliverer, gate, _ = make(backend, max_attempts=3)
        delivery = asyncio.create_task(deliverer.deliver("A", b"{}", DeliveryState()))
        for _ in range(100):
            await asyncio.sleep(0.01)
            if gate.refusal is not None:
                break
        # Open after the first answer, without a round of retries, and saying why.
        assert backend.calls == ["A"] and gate.state is GateState.OPEN
        assert gate.refusal is not None and gate.refusal.status == 401
        assert gate.refusal.message == "token expired"
        await asyncio.sleep(0.3)  # probes keep being refused: the order waits
        assert not delivery.done() and len(backend.calls) > 1
        refusing = False
        result = await asyncio.wait_for(delivery, 3)
        assert isinstance(result, Delivered)
        assert gate.closed and gate.refusal is None

    asyncio.run(scenario())


def test_a_storm_of_one_status_holds_the_rest_and_hands_back_its_letters() -> None:
    async def scenario() -> None:
        storming = True

        def answer(order_id: str) -> None:
            if storming:
                raise OrderRejected(400, "schema changed")

        deliverer, gate, _ = make(ScriptedBackend(answer), storm_orders=3)
        breaker = deliverer.breaker
        for order_id in ("A", "B"):
            result = await deliverer.deliver(order_id, b"{}", DeliveryState())
            assert isinstance(result, Rejected) and result.status == 400
            breaker.dead_lettered(400, StormLetter(order_id.encode(), b"{}", []))
        # The third different order refused alike is a storm: held, not rejected.
        held = asyncio.create_task(deliverer.deliver("C", b"{}", DeliveryState()))
        for _ in range(100):
            await asyncio.sleep(0.01)
            if gate.refusal is not None:
                break
        assert gate.refusal is not None and gate.refusal.status == 400
        assert not held.done() and breaker.take_replay() == []
        storming = False
        assert isinstance(await asyncio.wait_for(held, 3), Delivered)
        assert [letter.key for letter in breaker.take_replay()] == [b"A", b"B"]
        assert breaker.take_replay() == [] and breaker.storm_status is None

    asyncio.run(scenario())


def test_a_success_between_refusals_ends_the_streak() -> None:
    breaker = RefusalBreaker(threshold=3, window_s=60.0)
    assert not breaker.storm(422, "A") and not breaker.storm(422, "B")
    breaker.succeeded()
    assert not breaker.storm(422, "C") and not breaker.storm(422, "D")
    # The same order refused again is not a second order; another status starts anew.
    assert not breaker.storm(422, "D") and not breaker.storm(409, "E")
    assert not breaker.storm(409, "F") and breaker.storm(409, "G")

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
from order_consumer.errors import BackendUnavailable, OrderRejected

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
    backend: ScriptedBackend, max_attempts: int = 3
) -> tuple[Deliverer, BackendGate, asyncio.Event]:
    gate = BackendGate(probe_timeout_s=1.0, initial_backoff_s=0.05, max_backoff_s=0.1)
    stopping = asyncio.Event()
    deliverer = Deliverer(
        backend, NoLimit(), gate, AdaptiveLimit(AdaptiveConfig()),
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


def test_other_4xx_is_rejected_at_once() -> None:
    def not_found(order_id: str) -> None:
        raise OrderRejected(404, "no route")

    async def scenario() -> None:
        backend = ScriptedBackend(not_found)
        deliverer, gate, _ = make(backend)
        result = await deliverer.deliver("A", b"{}", DeliveryState())
        assert result == Rejected("backend answered 404: no route", 1)
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

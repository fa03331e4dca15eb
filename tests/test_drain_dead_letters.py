"""The DLQ sender's retry policy against a scripted producer (pure logic; the real DLQ is
exercised by tests/test_drain_e2e.py and tests/test_drain_backends.py)."""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka import Message

from flashgate.dlq import HEADER_REASON, HEADER_REPLAYED, header
from flashgate.errors import KafkaUnavailable
from order_consumer.dead_letters import DeadLetterSender
from order_consumer.delivery import Abandoned, DeliveryState
from order_consumer.refusals import StormLetter


class ScriptedProducer:
    """Refuses the first `failures` produces, then acknowledges; remembers what it got."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[tuple[str, bytes, bytes | None, list[tuple[str, object]]]] = []
        self.sending_seen: list[bool] = []
        self.state: DeliveryState | None = None

    async def produce(self, topic: str, value: bytes, key: bytes | None, headers: object) -> None:
        if self.state is not None:
            self.sending_seen.append(self.state.sending)
        await asyncio.sleep(0)
        if self.failures > 0:
            self.failures -= 1
            raise KafkaUnavailable("broker away")
        self.sent.append((topic, value, key, list(headers)))  # type: ignore[call-overload]


def sender(producer: ScriptedProducer, stopping: asyncio.Event) -> DeadLetterSender:
    return DeadLetterSender(
        producer,  # type: ignore[arg-type]
        dlq_topic="orders.dlq", orders_topic="orders", consumer_id="c-1",
        stopping=stopping, retry_s=0.01,
    )  # fmt: skip


def record() -> Message:
    return Message(topic="orders", partition=2, offset=41, key=b"o-1", value=b"{}")


def test_a_dead_letter_is_retried_until_kafka_has_it() -> None:
    async def scenario() -> None:
        producer = ScriptedProducer(failures=3)
        state = DeliveryState(attempts=2)
        producer.state = state
        headers = await sender(producer, asyncio.Event()).send(
            record(), "backend answered 422: bad", state, lambda: False
        )
        assert len(producer.sent) == 1 and producer.sent[0][0] == "orders.dlq"
        assert header(headers, HEADER_REASON) == "backend answered 422: bad"
        # On the wire during each produce, and not while waiting between them.
        assert producer.sending_seen == [True] * 4 and not state.sending

    asyncio.run(scenario())


@pytest.mark.parametrize("why", ["stopping", "revoked"])
def test_a_dead_letter_is_abandoned_when_the_record_is_no_longer_ours(why: str) -> None:
    async def scenario() -> None:
        stopping = asyncio.Event()
        revoked = False
        producer = ScriptedProducer(failures=10**6)
        task = asyncio.create_task(
            sender(producer, stopping).send(record(), "r", DeliveryState(), lambda: revoked)
        )
        await asyncio.sleep(0.05)
        assert not task.done()
        if why == "stopping":
            stopping.set()
        else:
            revoked = True
        with pytest.raises(Abandoned):
            await asyncio.wait_for(task, 2)
        assert producer.sent == []

    asyncio.run(scenario())


def test_storm_letters_go_back_to_the_orders_topic_marked_replayed() -> None:
    async def scenario() -> None:
        producer = ScriptedProducer(failures=1)
        letters = [StormLetter(f"o-{i}".encode(), b"{}", []) for i in range(3)]
        await sender(producer, asyncio.Event()).replay(letters)
        assert [(t, k) for t, _, k, _ in producer.sent] == [
            ("orders", b"o-0"), ("orders", b"o-1"), ("orders", b"o-2"),
        ]  # fmt: skip
        assert all(header(h, HEADER_REPLAYED) == "1" for _, _, _, h in producer.sent)  # type: ignore[arg-type]

    asyncio.run(scenario())

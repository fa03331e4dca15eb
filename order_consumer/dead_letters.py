"""Send a record to the DLQ (`orders.dlq`) and wait for Kafka's ack; put a storm's letters back.

A dead letter is retried until Kafka acknowledges it, for as long as the record
is still ours (the consumer is not stopping, its partition not revoked): the
offset is stored only after, so a letter is never lost, at worst written twice.
While it waits between tries nothing is on the wire, so a stop may drop it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from confluent_kafka import Message
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_fixed

from flashgate.dlq import Headers, dead_letter_headers, replay_headers
from flashgate.errors import KafkaUnavailable
from flashgate.kafka.producer import KafkaProducer
from order_consumer.delivery import Abandoned, DeliveryState
from order_consumer.refusals import StormLetter

log = logging.getLogger(__name__)

DLQ_RETRY_S = 1.0


class DeadLetterSender:
    def __init__(
        self,
        producer: KafkaProducer,
        *,
        dlq_topic: str,
        orders_topic: str,
        consumer_id: str,
        stopping: asyncio.Event,
        retry_s: float = DLQ_RETRY_S,
    ) -> None:
        self._retry_s = retry_s
        self._producer = producer
        self._dlq_topic = dlq_topic
        self._orders_topic = orders_topic
        self._consumer_id = consumer_id
        self._stopping = stopping

    async def send(
        self,
        message: Message,
        reason: str,
        state: DeliveryState,
        revoked: Callable[[], bool],
    ) -> Headers:
        """Dead-letter `message` with `reason`; its headers once Kafka has it.

        Raises Abandoned when the consumer stops or loses the partition first."""
        headers = dead_letter_headers(
            reason=reason,
            topic=message.topic() or "",
            partition=message.partition() or 0,
            offset=message.offset() or 0,
            attempts=state.attempts,
            consumer=self._consumer_id,
            source_headers=message.headers(),
        )

        async def produce() -> None:
            state.sending = True  # a produce on the wire is let finish, like a POST
            try:
                await self._producer.produce(
                    self._dlq_topic, message.value() or b"", message.key(), headers
                )
            finally:
                state.sending = False

        try:
            await self._until_acknowledged(produce, "dead letter", revoked)
        except KafkaUnavailable as exc:
            raise Abandoned(str(exc)) from exc
        return headers

    async def replay(self, letters: list[StormLetter]) -> None:
        """Produce the letters of a refusal storm to the orders topic again (until acked,
        or the consumer stops: then the rest stay listed for `flashgate dlq replay`)."""
        for letter in letters:

            async def produce(letter: StormLetter = letter) -> None:
                await self._producer.produce(
                    self._orders_topic, letter.value, letter.key, replay_headers(letter.headers)
                )

            try:
                await self._until_acknowledged(produce, "storm replay", lambda: False)
            except KafkaUnavailable:
                log.warning("stopping: %d storm letters left for `flashgate dlq replay`",
                            len(letters))  # fmt: skip
                return

    async def _until_acknowledged(
        self, produce: Callable[[], Awaitable[None]], what: str, revoked: Callable[[], bool]
    ) -> None:
        def log_retry(retry_state: RetryCallState) -> None:
            outcome = retry_state.outcome
            log.warning("%s not acknowledged, retrying: %s", what,
                        outcome.exception() if outcome is not None else "?")  # fmt: skip

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(KafkaUnavailable),
            wait=wait_fixed(self._retry_s),
            stop=lambda _: self._stopping.is_set() or revoked(),
            before_sleep=log_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await produce()

"""The drain loop, top to bottom: poll a batch, deliver each order at the set rate, store offsets.

An offset is stored only after every order before it in the batch was taken by
the backend or dead-lettered, so a crash at any point redelivers, never skips.
While the backend is down the batch waits (with backoff) instead of skipping.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import msgspec
from confluent_kafka import Message

from flashgate.kafka.producer import AsyncProducer
from flashgate.order import OrderRecord, decode_record
from flashgate.order_status import OrderStatusStore
from flashgate.settings import Settings
from order_consumer.backend_client import BackendClient
from order_consumer.delivery import deliver_with_retries
from order_consumer.errors import BackendUnavailable, OrderRejected
from order_consumer.kafka_source import KafkaSource
from order_consumer.local_limiter import TokenBucket

log = logging.getLogger(__name__)

POLL_TIMEOUT_S = 0.5


@dataclass
class DrainCounters:
    delivered: int = 0
    dead_lettered: int = 0


class DrainWorker:
    def __init__(
        self,
        settings: Settings,
        source: KafkaSource,
        backend: BackendClient,
        limiter: TokenBucket,
        dlq: AsyncProducer,
        statuses: OrderStatusStore,
    ) -> None:
        self._settings = settings
        self._source = source
        self._backend = backend
        self._limiter = limiter
        self._dlq = dlq
        self._statuses = statuses
        self._slots = asyncio.Semaphore(settings.drain.concurrency)
        self._stopping = asyncio.Event()
        self.counters = DrainCounters()

    def stop(self) -> None:
        """Finish the batch in hand (if the backend takes it), then return from run()."""
        self._stopping.set()

    async def run(self) -> None:
        await self._source.subscribe()
        while not self._stopping.is_set():
            messages = await self._source.poll(self._settings.drain.poll_batch, POLL_TIMEOUT_S)
            if not messages:
                continue
            if await self._drain_batch(messages):
                await self._source.store(messages)

    async def _drain_batch(self, messages: list[Message]) -> bool:
        """Deliver or dead-letter every message; False if stopped with some undelivered."""
        results = await asyncio.gather(*(self._handle(message) for message in messages))
        return all(results)

    async def _handle(self, message: Message) -> bool:
        value = message.value() or b""
        try:
            record = decode_record(value)
        except msgspec.DecodeError as exc:
            await self._dead_letter(message, None, f"undecodable record: {exc}")
            return True
        async with self._slots:
            while True:
                await self._limiter.acquire()
                try:
                    await deliver_with_retries(
                        lambda: self._backend.deliver(record.order_id, value),
                        max_attempts=self._settings.drain.max_attempts,
                    )
                except OrderRejected as exc:
                    await self._dead_letter(message, record, exc.reason or str(exc))
                    return True
                except BackendUnavailable as exc:
                    # The backend is down, not the order bad: hold it rather than skip it.
                    if self._stopping.is_set():
                        return False
                    log.warning("backend unavailable, holding order %s: %s", record.order_id, exc)
                    continue
                break
        self.counters.delivered += 1
        await self._statuses.mark_delivered(record.order_id, record.accepted_at, time.time())
        return True

    async def _dead_letter(self, message: Message, record: OrderRecord | None, reason: str) -> None:
        headers: list[tuple[str, str | bytes | None]] = [
            ("dlq.reason", reason.encode()[:1000]),
            ("dlq.source.topic", (message.topic() or "").encode()),
            ("dlq.source.partition", str(message.partition()).encode()),
            ("dlq.source.offset", str(message.offset()).encode()),
            ("dlq.failed_at", repr(time.time()).encode()),
        ]
        await self._dlq.produce(
            self._settings.kafka.dlq_topic, message.value() or b"", message.key(), headers
        )
        self.counters.dead_lettered += 1
        log.error("dead-lettered %s: %s", record.order_id if record else "?", reason)
        if record is not None:
            await self._statuses.mark_failed(record.order_id, record.accepted_at, reason)

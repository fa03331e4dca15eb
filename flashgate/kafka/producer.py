"""An asyncio face on confluent-kafka's Producer: await the broker's acknowledgement.

librdkafka runs its own I/O threads; one thread of ours polls for delivery
reports and resolves each request's future on the event loop with
`call_soon_threadsafe`, so the event loop never blocks on Kafka.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from flashgate.errors import KafkaUnavailable, ProducerQueueFull

Headers = list[tuple[str, str | bytes | None]]


class DeliveredRecord:
    """Where Kafka stored a record."""

    __slots__ = ("offset", "partition", "topic")

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset


class AsyncProducer:
    """Produce records and await their delivery reports."""

    def __init__(self, config: dict[str, Any], poll_interval_s: float = 0.1) -> None:
        self._producer = Producer(config)
        self._poll_interval_s = poll_interval_s
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._poll_loop, name="kafka-poll", daemon=True)
        self._poller.start()

    def _poll_loop(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(self._poll_interval_s)

    async def produce(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Headers | None = None
    ) -> DeliveredRecord:
        """Send one record; return once every in-sync replica has it (acks=all)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[DeliveredRecord] = loop.create_future()

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            loop.call_soon_threadsafe(_settle, future, err, msg)

        try:
            self._producer.produce(
                topic, value=value, key=key, headers=headers, on_delivery=on_delivery
            )
        except BufferError as exc:
            raise ProducerQueueFull("producer queue is full") from exc
        return await future

    def flush(self, timeout_s: float) -> int:
        """Wait for outstanding deliveries; return how many are still undelivered."""
        return int(self._producer.flush(timeout_s))

    def close(self, timeout_s: float = 10.0) -> int:
        remaining = self.flush(timeout_s)
        self._closed.set()
        self._poller.join(timeout=self._poll_interval_s * 10)
        return remaining


def _settle(future: asyncio.Future[DeliveredRecord], err: KafkaError | None, msg: Message) -> None:
    if future.done():  # the request was cancelled (client gone); nothing to tell
        return
    if err is not None:
        future.set_exception(KafkaUnavailable(f"Kafka refused the record: {err.str()}"))
    else:
        record = DeliveredRecord(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
        future.set_result(record)

"""flashgate's Kafka producer: `send()` returns a future of the broker's acknowledgement.

The one producer of the project: the gateway's orders, the drain's dead letters and
replays, and the benchmarks all go through it.

librdkafka runs its own I/O threads; one thread of ours polls for delivery
reports. The reports of one `poll()` are handed to the event loop together,
in one `call_soon_threadsafe`, so a busy gateway wakes its loop once per poll
rather than once per order. `send()` is a plain method returning a future:
no task per request. The producer is idempotent with acks=all (see
`flashgate.kafka.config`), and `message.timeout.ms` bounds every future.
A failed report resolves to `KafkaRefused` only when its error code proves the
record was never written, else to `KafkaOutcomeUnknown`
(`flashgate.kafka.delivery_outcome`).
While the brokers refuse the connection for security (authentication, TLS;
`flashgate.kafka.connection`), `refusal` names the cause so orders are refused
before anything is reserved, and the polling thread asks for metadata once a
second to notice when the connection works again.
Should librdkafka ever fail to report, one sweep on the event loop fails any
future still open past `ack_timeout_s`: one timer for the whole process rather
than one per request (a per-request `asyncio.timeout` cost ~5 % of the
gateway's own CPU).

Measured against confluent-kafka's asyncio producer (`confluent_kafka.aio`,
which in 2.16 refuses `headers`) in loadtest/b5_produce.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from flashgate.errors import KafkaAckOverdue, KafkaRefused, ProducerQueueFull
from flashgate.kafka.config import connection_of
from flashgate.kafka.delivery_outcome import delivery_failure

Headers = list[tuple[str, str | bytes | None]]
Report = tuple["asyncio.Future[DeliveredRecord]", KafkaError | None, Message]

SWEEP_INTERVAL_S = 0.1
# librdkafka reports by message.timeout.ms; past that plus this, no report is coming.
ACK_GRACE_S = 1.0
# While the connection fails (or has not worked yet): how often, and how long, to ask.
PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 0.5


class DeliveredRecord:
    """Where Kafka stored a record."""

    __slots__ = ("offset", "partition", "topic")

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset


class KafkaProducer:
    def __init__(
        self,
        config: dict[str, Any],
        *,
        ack_timeout_s: float | None = None,
        poll_interval_s: float = 0.1,
    ) -> None:
        """`ack_timeout_s`: when to give up on a report (default: librdkafka's
        `message.timeout.ms` plus a grace, after which no report can still come)."""
        self._producer = Producer(config)
        self.connection = connection_of(config)
        self._poll_interval_s = poll_interval_s
        if ack_timeout_s is None:
            ack_timeout_s = int(config.get("message.timeout.ms", 300_000)) / 1000 + ACK_GRACE_S
        self._ack_timeout_s = ack_timeout_s
        self._reports: deque[Report] = deque()
        # Futures in the order they were sent, so in deadline order: (deadline, future).
        self._open: deque[tuple[float, asyncio.Future[DeliveredRecord]]] = deque()
        self._sweep: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._poll_loop, name="kafka-poll", daemon=True)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Resolve futures on `loop` (the first `send` starts it on its own loop)."""
        self._loop = loop
        self._poller.start()

    def _poll_loop(self) -> None:
        next_probe = 0.0
        while not self._closed.is_set():
            self._producer.poll(self._poll_interval_s)
            self._hand_over()
            connection = self.connection
            if connection.cause is not None or not connection.ever_connected:
                now = time.monotonic()
                if now >= next_probe:
                    next_probe = now + PROBE_INTERVAL_S
                    self.cluster_reachable(PROBE_TIMEOUT_S)

    @property
    def refusal(self) -> str | None:
        """Why Kafka refuses this producer's connection (authentication, TLS), if it does."""
        return self.connection.refusal

    async def wait_first_answer(self, timeout_s: float) -> None:
        """Return once the brokers answered or refused, or after `timeout_s`: a gateway
        that starts with a wrong password refuses its first orders rather than reserving
        them."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.connection.ever_connected or self.connection.refusal is not None:
                return
            await asyncio.sleep(0.05)

    def _hand_over(self) -> None:
        # Runs in the polling (or flushing) thread: one loop wake-up per batch of reports.
        if not self._reports or self._loop is None:
            return
        batch = []
        while self._reports:
            batch.append(self._reports.popleft())
        # A closed loop means nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(_settle_all, batch)

    def _on_delivery(
        self, future: asyncio.Future[DeliveredRecord], err: KafkaError | None, msg: Message
    ) -> None:
        self._reports.append((future, err, msg))

    def send(
        self, topic: str, value: bytes, key: bytes | None, headers: Headers
    ) -> asyncio.Future[DeliveredRecord]:
        """Enqueue one record; the future resolves once every in-sync replica has it."""
        if self._loop is None:
            self.start(asyncio.get_running_loop())
            assert self._loop is not None
        future: asyncio.Future[DeliveredRecord] = self._loop.create_future()
        try:
            self._producer.produce(
                topic,
                value=value,
                key=key,
                headers=headers,
                on_delivery=partial(self._on_delivery, future),
            )
        except BufferError as exc:
            raise ProducerQueueFull("producer queue is full") from exc
        except KafkaException as exc:  # refused before it was queued (too large, ...)
            raise KafkaRefused(f"Kafka refused the record: {exc}") from exc
        self._open.append((time.monotonic() + self._ack_timeout_s, future))
        if self._sweep is None:
            self._sweep = self._loop.call_later(SWEEP_INTERVAL_S, self._fail_overdue)
        return future

    async def produce(
        self, topic: str, value: bytes, key: bytes | None, headers: Headers
    ) -> DeliveredRecord:
        """Send one record and wait for its acknowledgement (a caller with nothing to do
        meanwhile: dead letters, replays)."""
        return await self.send(topic, value, key, headers)

    def _fail_overdue(self) -> None:
        self._sweep = None
        now = time.monotonic()
        open_futures = self._open
        while open_futures:
            deadline, future = open_futures[0]
            if not future.done():
                if deadline > now:
                    break
                future.set_exception(
                    KafkaAckOverdue(f"no delivery report within {self._ack_timeout_s:g} s")
                )
            open_futures.popleft()
        if open_futures and self._loop is not None and not self._closed.is_set():
            self._sweep = self._loop.call_later(SWEEP_INTERVAL_S, self._fail_overdue)

    def close(self, timeout_s: float = 10.0) -> int:
        """Stop polling, flush what is queued; return how many records are undelivered."""
        # The sweep stops itself once closed (this runs off the loop's thread).
        self._closed.set()
        if self._poller.is_alive():
            self._poller.join(timeout=self._poll_interval_s * 10)
        remaining = int(self._producer.flush(timeout_s))
        self._hand_over()
        return remaining

    def cluster_reachable(self, timeout_s: float = 1.0) -> bool:
        try:
            self._producer.list_topics(timeout=timeout_s)
        except Exception:
            return False
        self.connection.connected()
        return True


def _settle_all(batch: list[Report]) -> None:
    for future, err, msg in batch:
        if future.done():  # the request gave up (timeout, cancelled): nothing to tell
            continue
        if err is not None:
            future.set_exception(delivery_failure(err))
        else:
            future.set_result(
                DeliveredRecord(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
            )

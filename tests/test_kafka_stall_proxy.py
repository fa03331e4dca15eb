"""The stall proxy (tests/kafka_stall_proxy.py) makes a Produce request reach the broker late.

Against a real broker that advertises the proxy: an idempotent acks=all
producer with message.timeout.ms=3000 whose Produce request is held gets an
error delivery report, a reader in another client instance reads the
partition from the beginning and finds the earlier records but not the held
one, and after `release()` the broker appends the held record after all, at
the next offset. That is "written after the gateway gave up on it and after
a reaper judged it absent".

What librdkafka (confluent-kafka 2.16.1, librdkafka 2.16.0) reported for the
held in-flight record: KafkaError._MSG_TIMED_OUT (code -192, "Local: Message
timed out"), about 4 s after produce() (librdkafka logged REQTMOUT "Timed out
ProduceRequest in flight (after 3977ms)" and closed the connection, whose
held bytes the proxy still forwards on release); `retriable()` is False and
the error is not fatal, so the idempotent producer stays usable.

A test without a broker checks the framing rules: on a connection that sends
Produce while holding, that frame and every later one are held and released
in order; other connections flow.
"""

from __future__ import annotations

import socket
import struct
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from flashgate.stack.kafka_broker import KafkaBroker
from tests.kafka_stall_proxy import KafkaStallProxy, running_broker_behind_proxy

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

MESSAGE_TIMEOUT_MS = 3000
EARLIER = [b"earlier-0", b"earlier-1", b"earlier-2"]
LATE = b"late"
# Bounds, not pauses: every wait below ends as soon as its condition holds.
DELIVERY_DEADLINE_S = 20.0
READ_DEADLINE_S = 20.0
ADMIN_DEADLINE_S = 30.0


@pytest.fixture(scope="module")
def stalled_kafka(
    kafka_libs: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[KafkaBroker, KafkaStallProxy]]:
    with running_broker_behind_proxy(kafka_libs, tmp_path_factory.mktemp("stall")) as pair:
        yield pair


def create_topic(bootstrap: str) -> str:
    topic = f"stall-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    futures[topic].result(timeout=ADMIN_DEADLINE_S)
    return topic


def read_partition(bootstrap: str, topic: str) -> list[bytes]:
    """Every value in partition 0 up to its high watermark, read by a fresh client."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=READ_DEADLINE_S)
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        values: list[bytes] = []
        deadline = time.monotonic() + READ_DEADLINE_S
        while len(values) < high:
            if time.monotonic() > deadline:
                raise AssertionError(f"read {len(values)} of {high} records within the deadline")
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise AssertionError(f"reading {topic}: {error}")
            value = message.value()
            assert value is not None
            values.append(value)
        return values
    finally:
        consumer.close()


def read_until(bootstrap: str, topic: str, wanted: bytes, timeout_s: float) -> list[bytes]:
    """Re-read the partition until `wanted` is in it; the last read if the deadline passes."""
    deadline = time.monotonic() + timeout_s
    values = read_partition(bootstrap, topic)
    while wanted not in values and time.monotonic() < deadline:
        time.sleep(0.2)
        values = read_partition(bootstrap, topic)
    return values


def test_held_produce_times_out_then_lands_after_readers_missed_it(
    stalled_kafka: tuple[KafkaBroker, KafkaStallProxy],
) -> None:
    broker, proxy = stalled_kafka
    assert broker.bootstrap == proxy.address
    topic = create_topic(broker.bootstrap)
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "message.timeout.ms": MESSAGE_TIMEOUT_MS,
            "linger.ms": 0,
        }
    )
    reports: dict[bytes, KafkaError | None] = {}

    def on_delivery(err: KafkaError | None, message: Any) -> None:
        reports[message.value()] = err

    try:
        for value in EARLIER:
            producer.produce(topic, value, partition=0, on_delivery=on_delivery)
        assert producer.flush(DELIVERY_DEADLINE_S) == 0
        assert all(reports[value] is None for value in EARLIER), reports

        proxy.hold_produce()
        try:
            produced_at = time.monotonic()
            producer.produce(topic, LATE, partition=0, on_delivery=on_delivery)
            # Serve the producer's queue while waiting: it sends the request from
            # its own thread, but poll() is what delivers the report to us.
            deadline = produced_at + DELIVERY_DEADLINE_S
            while LATE not in reports and time.monotonic() < deadline:
                producer.poll(0.1)
            waited_s = time.monotonic() - produced_at
            assert proxy.held_produce_requests >= 1
            assert LATE in reports, "no delivery report for the held record"
            error = reports[LATE]
            assert error is not None, "the held record was reported delivered"
            print(
                f"held record: {error.name()} ({error.code()}) {error.str()!r} "
                f"after {waited_s:.1f}s, retriable={error.retriable()} fatal={error.fatal()}"
            )
            assert error.code() == KafkaError._MSG_TIMED_OUT
            assert not error.fatal()

            # Another client instance, through the same proxy, while the request is held.
            assert read_partition(broker.bootstrap, topic) == EARLIER
        finally:
            proxy.release()

        # The broker appends the held request only now, after the producer gave
        # up and after the reader judged the record absent.
        values = read_until(broker.bootstrap, topic, LATE, READ_DEADLINE_S)
        assert values == [*EARLIER, LATE]
    finally:
        producer.flush(1.0)


# -- framing, without a broker --------------------------------------------


def frame(api_key: int, correlation_id: int, payload: bytes = b"") -> bytes:
    body = struct.pack(">hhi", api_key, 0, correlation_id) + payload
    return struct.pack(">i", len(body)) + body


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise AssertionError(f"connection closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def no_data(sock: socket.socket, within_s: float) -> bool:
    """True if nothing arrives on `sock` within `within_s` (asserting absence needs a window)."""
    sock.settimeout(within_s)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return True
    finally:
        sock.settimeout(5.0)


@pytest.fixture
def upstream() -> Iterator[socket.socket]:
    """A listening socket standing in for the broker."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(5.0)
    try:
        yield listener
    finally:
        listener.close()


def connect_through(proxy: KafkaStallProxy, listener: socket.socket) -> tuple[socket.socket, ...]:
    client = socket.create_connection(("127.0.0.1", proxy.port), timeout=5.0)
    server, _ = listener.accept()
    server.settimeout(5.0)
    return client, server


def test_proxy_holds_a_connection_from_its_first_produce_on(upstream: socket.socket) -> None:
    with KafkaStallProxy(upstream_port=upstream.getsockname()[1]) as proxy:
        producing_client, producing_server = connect_through(proxy, upstream)
        reading_client, reading_server = connect_through(proxy, upstream)
        try:
            proxy.hold_produce()
            metadata, produce, fetch_after = frame(3, 1), frame(0, 2, b"x" * 100), frame(1, 3)
            producing_client.sendall(metadata + produce + fetch_after)
            assert recv_exactly(producing_server, len(metadata)) == metadata
            assert proxy.wait_for_held_produce(1, timeout_s=5.0)

            # A connection that never produces flows while the other is held.
            fetch = frame(1, 7)
            reading_client.sendall(fetch)
            assert recv_exactly(reading_server, len(fetch)) == fetch
            # Broker->client bytes flow on the held connection too.
            response = struct.pack(">ii", 4, 1)
            producing_server.sendall(response)
            assert recv_exactly(producing_client, len(response)) == response
            assert no_data(producing_server, within_s=0.3)

            proxy.release()
            held = produce + fetch_after
            assert recv_exactly(producing_server, len(held)) == held
            assert proxy.held_produce_requests == 0
            # After release Produce flows.
            again = frame(0, 4)
            producing_client.sendall(again)
            assert recv_exactly(producing_server, len(again)) == again
        finally:
            for sock in (producing_client, producing_server, reading_client, reading_server):
                sock.close()

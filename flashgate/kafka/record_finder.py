"""Which of some record keys a topic holds, among the records produced in a time window.

The gateway's reaper asks this about reservations whose gateway never confirmed
them: a record that reached Kafka means the order was accepted, however its
gateway ended. Kafka has no lookup by key, so each partition is read from the
first offset at or after the window's start (`offsets_for_times`) until a
record past its end, or the partition's end. Record timestamps are the
producer's CreateTime, taken when the gateway produced, so the window is
narrow: reading it costs seconds of records, not the topic's retention.

Blocking (librdkafka calls): run it in a worker thread. Any Kafka failure is
raised as `KafkaUnavailable`, so a caller never mistakes "could not look" for
"not there".
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from flashgate.errors import KafkaUnavailable
from flashgate.kafka.config import reader_config
from flashgate.settings import KafkaSettings

READ_BATCH = 500
DEFAULT_TIMEOUT_S = 30.0


def find_keys(
    kafka: KafkaSettings,
    topic: str,
    keys: Collection[bytes],
    start_ms: int,
    end_ms: int,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> set[bytes]:
    """The subset of `keys` carried by records of `topic` timestamped in [start_ms, end_ms]."""
    wanted = set(keys)
    if not wanted:
        return set()
    suffix = uuid.uuid4().hex[:8]
    consumer = Consumer(
        {
            # Assigned partitions only: the group id is never joined or committed to.
            **reader_config(
                kafka, f"flashgate-record-finder-{suffix}", f"flashgate-record-finder-{suffix}"
            ),
            "enable.partition.eof": True,
        }
    )
    deadline = time.monotonic() + timeout_s
    try:
        return _scan(consumer, topic, wanted, start_ms, end_ms, deadline)
    except KafkaException as exc:
        raise KafkaUnavailable(f"could not read {topic}: {exc}") from exc
    finally:
        consumer.close()


def _scan(
    consumer: Consumer,
    topic: str,
    wanted: set[bytes],
    start_ms: int,
    end_ms: int,
    deadline: float,
) -> set[bytes]:
    metadata = consumer.list_topics(topic, timeout=_left(deadline))
    if topic not in metadata.topics or metadata.topics[topic].error is not None:
        raise KafkaUnavailable(f"topic {topic} is not available")
    partitions = sorted(metadata.topics[topic].partitions)
    starts = consumer.offsets_for_times(
        [TopicPartition(topic, p, start_ms) for p in partitions], timeout=_left(deadline)
    )
    # offset -1: no record at or after start_ms in that partition, nothing to read.
    todo = [tp for tp in starts if tp.offset >= 0]
    found: set[bytes] = set()
    if not todo:
        return found
    consumer.assign(todo)
    open_partitions = {tp.partition for tp in todo}
    while open_partitions and found != wanted:
        for message in consumer.consume(READ_BATCH, timeout=min(1.0, _left(deadline))):
            error = message.error()
            partition = message.partition() or 0
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    open_partitions.discard(partition)
                    continue
                raise KafkaUnavailable(f"reading {topic}: {error.str()}")
            _, timestamp = message.timestamp()
            if timestamp > end_ms:
                open_partitions.discard(partition)
                consumer.pause([TopicPartition(topic, partition)])
                continue
            key = message.key()
            if key in wanted:
                found.add(key)
        _left(deadline)
    return found


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise KafkaUnavailable("looking for records in Kafka took too long")
    return left

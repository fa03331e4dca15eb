"""Idempotent creation of the `orders` and `orders.dlq` topics."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from flashgate.errors import KafkaUnavailable
from flashgate.kafka.config import admin_config, reader_config
from flashgate.settings import KafkaSettings


def wait_for_broker(kafka: KafkaSettings, timeout_s: float = 60.0) -> None:
    """Return once the cluster answers a metadata request; raise after `timeout_s`."""
    admin = AdminClient(admin_config(kafka))
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin.list_topics(timeout=2)
            return
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise KafkaUnavailable(f"Kafka at {kafka.bootstrap_servers} not ready") from exc
            time.sleep(0.2)


def ensure_topics(kafka: KafkaSettings, timeout_s: float = 30.0) -> None:
    """Create the orders and dead-letter topics unless they exist."""
    admin = AdminClient(admin_config(kafka))
    config = {
        "retention.ms": str(kafka.retention_ms),
        "min.insync.replicas": str(kafka.min_insync_replicas),
    }
    wanted = [
        NewTopic(kafka.orders_topic, kafka.partitions, kafka.replication_factor, config=config),
        NewTopic(kafka.dlq_topic, 1, kafka.replication_factor, config=config),
    ]
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [topic for topic in wanted if topic.topic not in existing]
    if not missing:
        return
    for topic, future in admin.create_topics(missing, request_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise KafkaUnavailable(f"cannot create topic {topic}: {exc}") from exc
    # Metadata propagates asynchronously: wait until every partition has a leader.
    deadline = time.monotonic() + timeout_s
    names = {topic.topic for topic in wanted}
    while time.monotonic() < deadline:
        topics = admin.list_topics(timeout=timeout_s).topics
        if all(
            name in topics
            and topics[name].partitions
            and all(p.leader >= 0 for p in topics[name].partitions.values())
            for name in names
        ):
            return
        time.sleep(0.1)
    raise KafkaUnavailable(f"topics {sorted(names)} have no leaders after {timeout_s}s")


class TopicSizer:
    """How many records a topic holds (sum of its partitions' end offsets), cached briefly.

    Blocking (librdkafka calls): run it in a thread from async code.
    """

    def __init__(self, kafka: KafkaSettings, cache_s: float = 2.0) -> None:
        self._consumer = Consumer(
            reader_config(kafka, "flashgate-topic-sizer", "flashgate-topic-sizer")
        )
        self._cache_s = cache_s
        self._cached: dict[str, tuple[float, int | None]] = {}

    def records(self, topic: str, timeout_s: float = 2.0) -> int | None:
        now = time.monotonic()
        hit = self._cached.get(topic)
        if hit is not None and now - hit[0] < self._cache_s:
            return hit[1]
        try:
            metadata = self._consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
            total: int | None = 0
            if metadata is None or metadata.error is not None:
                total = None
            else:
                for partition in metadata.partitions:
                    low, high = self._consumer.get_watermark_offsets(
                        TopicPartition(topic, partition), timeout=timeout_s
                    )
                    total = (total or 0) + max(0, high - low)
        except KafkaException:
            total = None
        self._cached[topic] = (now, total)
        return total

    def close(self) -> None:
        self._consumer.close()

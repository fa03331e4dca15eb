"""Helpers of the buffer tests: a short-retention orders topic and what Kafka holds of it."""

from __future__ import annotations

import sqlite3
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import (  # not re-exported for mypy
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
)
from confluent_kafka.admin._resource import ResourceType

from flashgate.ids import new_order_id
from flashgate.kafka.config import admin_config, producer_config, reader_config
from flashgate.order import OrderRecord, encode_record
from flashgate.settings import Settings
from tests.services import Services

PARTITIONS = 6
SET = AlterConfigOpType.SET


def shorten_retention(settings: Settings, retention_ms: int, segment_ms: int) -> None:
    """Give the test's orders topic a retention of seconds and small segments (Kafka
    deletes whole segments, and only closed ones)."""
    admin = AdminClient(admin_config(settings.kafka))
    resource = ConfigResource(
        ResourceType.TOPIC,
        settings.kafka.orders_topic,
        incremental_configs=[
            ConfigEntry("retention.ms", str(retention_ms), incremental_operation=SET),
            ConfigEntry("segment.ms", str(segment_ms), incremental_operation=SET),
        ],
    )
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)


def produce_each_partition(settings: Settings, per_partition: int, tag: str) -> list[str]:
    """`per_partition` orders straight into every partition (no gateway): order ids."""
    producer = Producer(producer_config(settings.kafka, f"buffer-test-{tag}"))
    ids = []
    for partition in range(PARTITIONS):
        for i in range(per_partition):
            order_id = new_order_id()
            record = OrderRecord(
                order_id=order_id, accepted_at=time.time(), sale_id="direct", sku="A",
                quantity=1, user_id=f"{tag}-{partition}-{i}",
            )  # fmt: skip
            producer.produce(
                settings.kafka.orders_topic, encode_record(record), key=order_id.encode(),
                partition=partition,
            )  # fmt: skip
            ids.append(order_id)
    assert producer.flush(30) == 0
    return ids


def log_starts(settings: Settings) -> dict[int, int]:
    """The earliest offset Kafka still holds, per partition."""
    consumer = Consumer(reader_config(settings.kafka, "buffer-test-starts", "buffer-test-starts"))
    try:
        return {
            p: consumer.get_watermark_offsets(
                TopicPartition(settings.kafka.orders_topic, p), timeout=10
            )[0]
            for p in range(PARTITIONS)
        }
    finally:
        consumer.close()


def stored_ids(services: Services) -> set[str]:
    """The order ids the reference backend stored (its SQLite table, read-only)."""
    path = services.env.root / "backend.sqlite3"
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return {row[0] for row in connection.execute("SELECT order_id FROM orders")}
    finally:
        connection.close()

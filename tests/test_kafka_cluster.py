"""A real 3-node KRaft cluster with the production topic settings loses no acknowledged record.

This backs the replication settings of the compose and Kubernetes deploys
(replication 3, `min.insync.replicas=2`, idempotent producer with acks=all):
the leader of a partition is SIGKILLed while records are in flight, producing
goes on, and afterwards every record the producer saw acknowledged is in the
log exactly once, at the offset its acknowledgement named. It runs on a
plaintext cluster and on one whose client and inter-broker listeners are
SASL_SSL (SCRAM-SHA-512), as the Kubernetes deploy's are.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.admin._resource import ResourceType

from flashgate.errors import FlashgateError
from flashgate.kafka.config import admin_config, producer_config, reader_config
from flashgate.kafka.producer import KafkaProducer
from flashgate.kafka.topics import ensure_topics, wait_for_broker
from flashgate.settings import KafkaSettings
from flashgate.stack.kafka_cluster import KafkaCluster
from flashgate.stack.kafka_security import BrokerSecurity

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

NODES = 3
HEAP_MB = 256
PARTITIONS = 3
WAVE = 200  # records in flight at once
TOTAL = 3_000
KILL_AFTER = 1_000  # records acknowledged before the broker is killed
PRODUCE_DEADLINE_S = 60.0
READ_DEADLINE_S = 30.0
# Test-only: fence a dead broker after 3 s instead of 9 s, so the ISR shrinks
# (and acks=all completes again) quickly. Production keeps Kafka's defaults.
FAST_FAILOVER = {
    "broker.session.timeout.ms": "3000",
    "broker.heartbeat.interval.ms": "500",
    "replica.lag.time.max.ms": "5000",
}


@pytest.fixture(params=["plaintext", "sasl_ssl"])
def cluster(
    kafka_libs: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[KafkaCluster]:
    security = (
        BrokerSecurity.prepare("sasl_ssl", tmp_path / "tls")
        if request.param == "sasl_ssl"
        else None
    )
    nodes = KafkaCluster.create(
        NODES,
        tmp_path / "cluster",
        kafka_libs,
        heap_mb=HEAP_MB,
        overrides=FAST_FAILOVER,
        security=security,
    )
    try:
        try:
            nodes.start(timeout_s=90)
        except FlashgateError as exc:
            pytest.fail(f"the cluster did not start: {exc}\n{nodes.log_tails()}")
        yield nodes
    finally:
        # The data is thrown away, and after the test's kill the last node has
        # no quorum for a controlled shutdown: kill them all.
        nodes.kill()


def _topic_settings(cluster: KafkaCluster) -> KafkaSettings:
    suffix = uuid.uuid4().hex[:8]
    security = cluster.brokers[0].security
    kafka = KafkaSettings(
        bootstrap_servers=cluster.bootstrap,
        orders_topic=f"orders-{suffix}",
        dlq_topic=f"orders-{suffix}.dlq",
        partitions=PARTITIONS,
        replication_factor=3,
        min_insync_replicas=2,
        # Long enough to ride out a leader election; the gateway bounds its own wait.
        message_timeout_ms=30_000,
    )
    return kafka if security is None else security.kafka_settings(kafka)


def _topic_config(admin: AdminClient, topic: str) -> dict[str, str]:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    entries = admin.describe_configs([resource])[resource].result(timeout=10)
    return {name: entry.value for name, entry in entries.items()}


class ProduceLog:
    """What the producer was told: acknowledged (partition, offset) -> value, and failures."""

    def __init__(self) -> None:
        self.acked: dict[tuple[int, int], bytes] = {}
        self.failed: list[int] = []
        self.acked_after_kill = 0
        self.killed = False


async def _produce(
    producer: KafkaProducer,
    topic: str,
    kill: Callable[[], Awaitable[None]],
    log: ProduceLog,
) -> None:
    async def one(i: int) -> None:
        value = f"record-{i:06d}".encode()
        try:
            record = await producer.produce(topic, value, str(i).encode(), [])
        except FlashgateError:
            log.failed.append(i)
            return
        log.acked[(record.partition, record.offset)] = value
        if log.killed:
            log.acked_after_kill += 1

    for start in range(0, TOTAL, WAVE):
        wave = asyncio.gather(*(one(i) for i in range(start, start + WAVE)))
        if not log.killed and len(log.acked) >= KILL_AFTER:
            # The wave's records reach librdkafka as soon as this task yields,
            # so the broker dies with records in flight.
            log.killed = True
            await kill()
        await wave


def _read_back(kafka: KafkaSettings, topic: str) -> dict[tuple[int, int], bytes]:
    group = f"verify-{uuid.uuid4().hex[:8]}"
    consumer = Consumer(reader_config(kafka, group, group))
    try:
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(PARTITIONS)
        }
        consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        found: dict[tuple[int, int], bytes] = {}
        deadline = time.monotonic() + READ_DEADLINE_S
        # A fresh topic written without transactions has no offset gaps.
        while len(found) < sum(ends.values()) and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1_000, timeout=0.5):
                if message.error() is None:
                    found[(message.partition() or 0, message.offset() or 0)] = (
                        message.value() or b""
                    )
        return found
    finally:
        consumer.close()


def test_a_killed_broker_loses_no_acknowledged_record(cluster: KafkaCluster) -> None:
    kafka = _topic_settings(cluster)
    wait_for_broker(kafka, timeout_s=60)
    ensure_topics(kafka, timeout_s=30)
    admin = AdminClient(admin_config(kafka))

    metadata = admin.list_topics(kafka.orders_topic, timeout=10).topics[kafka.orders_topic]
    assert len(metadata.partitions) == PARTITIONS
    assert all(len(p.replicas) == 3 for p in metadata.partitions.values())
    config = _topic_config(admin, kafka.orders_topic)
    assert config["min.insync.replicas"] == "2"
    assert config["retention.ms"] == "259200000"

    # Kill the leader of partition 0: its partitions need a new leader mid-stream.
    victim = cluster.broker(metadata.partitions[0].leader)
    producer = KafkaProducer(producer_config(kafka, "cluster-test"))
    log = ProduceLog()

    async def kill_victim() -> None:
        await asyncio.to_thread(victim.kill)

    async def produce() -> None:
        await asyncio.wait_for(
            _produce(producer, kafka.orders_topic, kill_victim, log), PRODUCE_DEADLINE_S
        )

    try:
        asyncio.run(produce())
    finally:
        undelivered = producer.close(timeout_s=30)
    assert undelivered == 0
    assert victim.process is not None and not victim.process.running()

    stored = _read_back(kafka, kafka.orders_topic)

    missing = {k: v for k, v in log.acked.items() if stored.get(k) != v}
    assert not missing, (
        f"{len(missing)} acknowledged records lost or moved, e.g. {list(missing)[:5]}"
    )
    copies = Counter(stored.values())
    duplicated = [value for value in log.acked.values() if copies[value] != 1]
    assert not duplicated, f"acknowledged records stored more than once: {duplicated[:5]}"
    # The cluster stayed writable with one node down (2 in-sync replicas remain).
    assert log.killed
    assert log.acked_after_kill >= TOTAL - KILL_AFTER - 2 * WAVE, (
        f"only {log.acked_after_kill} acknowledged after the kill, {len(log.failed)} failed"
    )

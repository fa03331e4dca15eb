"""librdkafka configuration dictionaries built from the settings, in one place.

`client_config` is the part every client shares (brokers, security from
`[kafka]`, the `[kafka.client]` table verbatim, and the error callback and
logger of a `KafkaConnection`); the producer, consumer and admin builders add
their role's properties to it, and every Kafka client of flashgate is built
from one of them. Defaults that matter for the guarantees are set explicitly
rather than left to the client's defaults (see docs/FACTS.md): idempotence on,
acks=all, a bounded message timeout, and offsets stored only by the
application. `[kafka.client]` cannot change those (`flashgate.kafka.security`).
"""

from __future__ import annotations

from typing import Any

from flashgate.kafka.connection import KafkaConnection
from flashgate.kafka.security import security_properties
from flashgate.settings import DrainSettings, KafkaSettings

# Info level: a connection closed before its first answer is logged there only, and
# `KafkaConnection` turns those into one line naming a protocol mismatch.
LOG_LEVEL = 6


def client_config(
    kafka: KafkaSettings, client_id: str, connection: KafkaConnection | None = None
) -> dict[str, Any]:
    """Brokers, security and `[kafka.client]`: what every client of flashgate shares."""
    watch = connection or KafkaConnection(client_id, kafka.security_protocol)
    return {
        "bootstrap.servers": kafka.bootstrap_servers,
        "client.id": client_id,
        **security_properties(kafka),
        **kafka.client,
        "error_cb": watch.on_error,
        "logger": watch,
        "log_level": LOG_LEVEL,
    }


def producer_config(
    kafka: KafkaSettings, client_id: str, connection: KafkaConnection | None = None
) -> dict[str, Any]:
    return {
        "linger.ms": kafka.linger_ms,
        "compression.type": kafka.compression,
        # The local queue bounds memory; a full queue is backpressure (503), not a crash.
        "queue.buffering.max.messages": 100_000,
        "socket.keepalive.enable": True,
        **client_config(kafka, client_id, connection),
        "enable.idempotence": True,
        "acks": "all",
        "message.timeout.ms": kafka.message_timeout_ms,
    }


def consumer_config(kafka: KafkaSettings, drain: DrainSettings, client_id: str) -> dict[str, Any]:
    return {
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 1_000,
        "partition.assignment.strategy": "cooperative-sticky",
        # A paused drain still polls, so it stays in the group; this is only the
        # bound for a worker that really hangs.
        "max.poll.interval.ms": 300_000,
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000,
        **client_config(kafka, client_id),
        "group.id": drain.group_id,
        # At-least-once: the worker stores an offset only after the backend took the order;
        # librdkafka then commits stored offsets in the background.
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
    }


def reader_config(kafka: KafkaSettings, client_id: str, group_id: str) -> dict[str, Any]:
    """A consumer that reads assigned partitions and commits only when told (finders, DLQ)."""
    return {
        "auto.offset.reset": "earliest",
        **client_config(kafka, client_id),
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
    }


def admin_config(kafka: KafkaSettings, client_id: str = "flashgate-admin") -> dict[str, Any]:
    return client_config(kafka, client_id)


def connection_of(config: dict[str, Any]) -> KafkaConnection:
    """The `KafkaConnection` a configuration from `client_config` reports to (a new one for
    a hand-made configuration, which then only learns what the producer's probes tell it)."""
    watch = config.get("logger")
    if isinstance(watch, KafkaConnection):
        return watch
    return KafkaConnection(str(config.get("client.id", "kafka-client")), "PLAINTEXT")

"""librdkafka configuration dictionaries built from the settings, in one place.

Defaults that matter for the guarantees are set explicitly rather than left to
the client's defaults (see FACTS.md): idempotence on, acks=all, a bounded
message timeout, and offsets stored only by the application.
"""

from __future__ import annotations

from typing import Any

from flashgate.settings import DrainSettings, KafkaSettings


def producer_config(kafka: KafkaSettings, client_id: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": kafka.bootstrap_servers,
        "client.id": client_id,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": kafka.linger_ms,
        "compression.type": kafka.compression,
        "message.timeout.ms": kafka.message_timeout_ms,
        # The local queue bounds memory; a full queue is backpressure (503), not a crash.
        "queue.buffering.max.messages": 100_000,
        "socket.keepalive.enable": True,
        "log_level": 3,
    }


def consumer_config(kafka: KafkaSettings, drain: DrainSettings, client_id: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": kafka.bootstrap_servers,
        "client.id": client_id,
        "group.id": drain.group_id,
        "auto.offset.reset": "earliest",
        # At-least-once: the worker stores an offset only after the backend took the order;
        # librdkafka then commits stored offsets in the background.
        "enable.auto.offset.store": False,
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 1_000,
        "partition.assignment.strategy": "cooperative-sticky",
        # A paused drain still polls, so it stays in the group; this is only the
        # bound for a worker that really hangs.
        "max.poll.interval.ms": 300_000,
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000,
        "isolation.level": "read_committed",
        "log_level": 3,
    }


def admin_config(kafka: KafkaSettings) -> dict[str, Any]:
    return {"bootstrap.servers": kafka.bootstrap_servers, "log_level": 3}

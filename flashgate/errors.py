"""flashgate's own exceptions: one class per failure a caller handles.

Kafka, Redis and HTTP client exceptions are wrapped into these at the boundary,
so callers never match on a third-party exception type.
"""

from __future__ import annotations


class FlashgateError(Exception):
    """Root of every error flashgate raises on purpose."""


class ConfigError(FlashgateError):
    """The settings file or an environment override is invalid."""


class KafkaUnavailable(FlashgateError):
    """Kafka did not acknowledge a record in time, or refused it."""


class KafkaRefused(KafkaUnavailable):
    """Kafka definitely did not write the record (see `flashgate.kafka.delivery_outcome`)."""


class ProducerQueueFull(KafkaRefused):
    """The producer's local queue is full: backpressure, answer 503."""


class KafkaOutcomeUnknown(KafkaUnavailable):
    """The record may or may not be in Kafka: the request timed out or failed in flight."""


class KafkaAckOverdue(KafkaOutcomeUnknown):
    """No delivery report came by the deadline: the record may or may not be in Kafka."""


class StackError(FlashgateError):
    """A part of the local stack could not be set up or started."""


class PortInUse(StackError):
    """A port the local stack needs is already taken."""

    def __init__(self, name: str, host: str, port: int) -> None:
        super().__init__(
            f"port {host}:{port} for {name} is already in use; stop whatever holds it "
            f"or choose another port (see flashgate.toml)"
        )
        self.name = name
        self.host = host
        self.port = port


class CrashLoop(StackError):
    """A supervised process kept exiting: its supervisor stops everything."""

    def __init__(self, name: str, exit_code: int | None, exits: int, window_s: float) -> None:
        super().__init__(
            f"{name} keeps crashing: it exited {exits} times within {window_s:g} s "
            f"(last exit code {exit_code}); see its log"
        )
        self.name = name
        self.exit_code = exit_code

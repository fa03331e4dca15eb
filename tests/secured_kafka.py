"""Test helpers for secured Kafka: a SASL_SSL or mutual-TLS broker on free ports, and the
service settings (FLASHGATE_* variables) that connect to it.

A secured broker starts in ~15 s here, so each test module starts one (module
fixture) and its tests share it, each with its own topics and group.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flashgate.stack.kafka_broker import BrokerSpec, KafkaBroker, new_cluster_id
from flashgate.stack.kafka_security import BrokerSecurity, Mode
from flashgate.stack.ports import free_port
from flashgate.stack.redis_server import RedisServer
from tests.gateway_client import new_env
from tests.services import TEST_BROKER_HEAP_MB, ServiceEnv


@dataclass(frozen=True)
class SecuredBroker:
    broker: KafkaBroker
    security: BrokerSecurity

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def password(self) -> str:
        return self.security.password_file.read_text().strip()


@contextmanager
def running_secured_broker(kafka_libs: Path, root: Path, mode: Mode) -> Iterator[SecuredBroker]:
    security = BrokerSecurity.prepare(mode, root / "tls")
    broker = KafkaBroker(
        BrokerSpec(1, free_port(), free_port()),
        data_dir=root / "data",
        libs_dir=kafka_libs,
        heap_mb=TEST_BROKER_HEAP_MB,
        cluster_id=new_cluster_id(kafka_libs),
        security=security,
    )
    broker.format_storage()
    broker.start(root / "broker.log")
    try:
        broker.wait_listening(90)
        yield SecuredBroker(broker, security)
    finally:
        broker.stop()


def secured_env(secured: SecuredBroker, redis: RedisServer, root: Path) -> ServiceEnv:
    """Settings for one test on the secured broker, its topics created over the listener."""
    return new_env(secured.broker, redis, root, secured.security.client_variables())

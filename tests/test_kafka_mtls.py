"""Secured Kafka over mutual TLS, on a real broker started for this module: orders end to
end, the drain's dead letters and their replay, and a client certificate the broker refuses
(none, one from another CA, an expired one) answered clearly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flashgate.stack.kafka_tls import TlsMaterial
from flashgate.stack.redis_server import RedisServer
from tests.secured_checks import dead_letters_and_replay, refused_clearly
from tests.secured_kafka import (
    SecuredBroker,
    expired_client_certificate,
    running_secured_broker,
    secured_services,
)
from tests.services import Services


@pytest.fixture(scope="module")
def mtls_broker(
    kafka_libs: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SecuredBroker]:
    root = tmp_path_factory.mktemp("kafka-mtls")
    with running_secured_broker(kafka_libs, root, "mtls") as broker:
        yield broker


@pytest.fixture
def mtls_services(
    mtls_broker: SecuredBroker, redis_server: RedisServer, tmp_path: Path
) -> Iterator[Services]:
    with secured_services(mtls_broker, redis_server, tmp_path) as services:
        yield services


def test_orders_dead_letters_and_replay_over_mutual_tls(mtls_services: Services) -> None:
    dead_letters_and_replay(mtls_services)


@pytest.mark.parametrize(
    "case", ["no client certificate", "certificate of another CA", "expired certificate"]
)
def test_a_refused_client_certificate_is_clear(
    mtls_services: Services, mtls_broker: SecuredBroker, tmp_path: Path, case: str
) -> None:
    if case == "no client certificate":
        cert, key = "", ""
    elif case == "certificate of another CA":
        other = TlsMaterial(tmp_path / "other-ca").ensure()
        cert, key = str(other.client_cert), str(other.client_key)
    else:
        expired = expired_client_certificate(mtls_broker.security.tls, tmp_path / "expired")
        cert, key = str(expired[0]), str(expired[1])
    overrides = {
        "FLASHGATE_KAFKA_SSL_CERTIFICATE_LOCATION": cert,
        "FLASHGATE_KAFKA_SSL_KEY_LOCATION": key,
    }
    mtls_services.start_gateway(**overrides)
    mtls_services.start_consumer(**overrides)
    refused_clearly(mtls_services, "SSL")

"""Secured Kafka over SASL_SSL with SCRAM-SHA-512, on a real broker started for this module:
the order path end to end, each refused connection answered clearly, and no secret in any
log line or admin answer."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from flashgate.stack.kafka_tls import TlsMaterial
from flashgate.stack.redis_server import RedisServer
from tests.secured_checks import orders_reach_the_backend, readiness, refused_clearly
from tests.secured_kafka import SecuredBroker, running_secured_broker, secured_env
from tests.services import ServiceEnv, Services, admin_json


@pytest.fixture(scope="module")
def sasl_broker(
    kafka_libs: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SecuredBroker]:
    root = tmp_path_factory.mktemp("kafka-sasl-ssl")
    with running_secured_broker(kafka_libs, root, "sasl_ssl") as broker:
        yield broker


@pytest.fixture
def sasl_services(
    sasl_broker: SecuredBroker, redis_server: RedisServer, tmp_path: Path
) -> Iterator[Services]:
    services = Services(secured_env(sasl_broker, redis_server, tmp_path))
    try:
        yield services
    finally:
        services.stop_all()
        client = redis.Redis.from_url(redis_server.url)
        client.flushdb()
        client.close()


def test_orders_over_sasl_ssl_reach_the_backend_and_no_secret_shows(
    sasl_services: Services, sasl_broker: SecuredBroker
) -> None:
    services = sasl_services
    services.start_backend()
    services.start_consumer()
    services.start_gateway()
    orders_reach_the_backend(services, 20)

    env = services.env
    password = sasl_broker.password()
    answers = [
        str(readiness(env.gateway_url)),
        *(str(admin_json(env, "GET", path)) for path in ("/admin/v1/drain", "/admin/v1/overview")),
        _flashgate_status(env),
    ]
    for answer in answers:
        assert password not in answer
    for log in env.root.glob("*.log"):
        assert password not in log.read_text(), log


def _flashgate_status(env: ServiceEnv) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "flashgate", "status"],
        env=env.process_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


@pytest.mark.parametrize(
    ("case", "cause"),
    [
        ("wrong password", "Authentication failed"),
        ("unknown user", "Authentication failed"),
        ("untrusted CA", "certificate verify failed"),
        ("plaintext client", "security_protocol is PLAINTEXT"),
    ],
)
def test_a_refused_connection_is_clear(
    sasl_services: Services, tmp_path: Path, case: str, cause: str
) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    other_ca = TlsMaterial(tmp_path / "other-ca").ensure()
    overrides = {
        "wrong password": {"FLASHGATE_KAFKA_SASL_PASSWORD_FILE": str(wrong)},
        "unknown user": {"FLASHGATE_KAFKA_SASL_USERNAME": "nobody"},
        "untrusted CA": {"FLASHGATE_KAFKA_SSL_CA_LOCATION": str(other_ca.ca_cert)},
        "plaintext client": {
            "FLASHGATE_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
            "FLASHGATE_KAFKA_SASL_MECHANISM": "",
            "FLASHGATE_KAFKA_SASL_USERNAME": "",
            "FLASHGATE_KAFKA_SASL_PASSWORD_FILE": "",
            "FLASHGATE_KAFKA_SSL_CA_LOCATION": "",
        },
    }[case]
    sasl_services.start_gateway(**overrides)
    sasl_services.start_consumer(**overrides)
    refused_clearly(sasl_services, cause)

"""Secured Kafka over SASL_SSL with SCRAM-SHA-512, on a real broker started for this module:
the order path end to end, each refused connection answered clearly, and no secret in any
log line or admin answer."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

# Not re-exported by confluent_kafka.admin for mypy (as OffsetSpec in kafka_source.py).
from confluent_kafka.admin._scram import (
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from flashgate.kafka.config import admin_config
from flashgate.stack.kafka_tls import TlsMaterial
from flashgate.stack.redis_server import RedisServer
from tests.gateway_client import OPEN_RATES, Client
from tests.secured_checks import (
    REFUSED_LINE,
    dead_letters_and_replay,
    orders_reach_the_backend,
    readiness,
    refused_clearly,
)
from tests.secured_kafka import SecuredBroker, running_secured_broker, secured_services
from tests.services import ServiceEnv, Services, admin_json, load_sale, wait_until


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
    with secured_services(sasl_broker, redis_server, tmp_path) as services:
        yield services


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


def test_dead_letters_and_replay_over_sasl_ssl(sasl_services: Services) -> None:
    dead_letters_and_replay(sasl_services)


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


def test_a_gateway_refused_recovers_once_kafka_lets_it_in(
    sasl_services: Services, sasl_broker: SecuredBroker, tmp_path: Path
) -> None:
    """The refusal is not sticky: once the broker accepts the credentials (here, the user
    is created while the gateway runs) the gateway notices within seconds, says so once,
    and takes orders again."""
    user = f"late-{tmp_path.name[-8:].lower()}"
    password_file = tmp_path / "late.password"
    password_file.write_text("late-user-password\n")
    services = sasl_services
    gateway = services.start_gateway(
        FLASHGATE_KAFKA_SASL_USERNAME=user,
        FLASHGATE_KAFKA_SASL_PASSWORD_FILE=str(password_file),
    )

    def refused() -> bool:
        status, body = readiness(services.env.gateway_url)
        return status == 503 and "Authentication failed" in body.get("causes", {}).get("kafka", "")

    assert wait_until(refused, timeout_s=30), readiness(services.env.gateway_url)

    kafka = services.env.settings.kafka
    admin = AdminClient(admin_config(kafka, "test-scram-admin"))
    upsert = UserScramCredentialUpsertion(
        user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), b"late-user-password"
    )
    for future in admin.alter_user_scram_credentials([upsert]).values():
        future.result(timeout=30)

    assert wait_until(lambda: readiness(services.env.gateway_url)[0] == 200, timeout_s=30)
    assert _one_order(services) == 202
    log = gateway.log_path.read_text()
    assert log.count(REFUSED_LINE) == 1 and log.count("Kafka reachable again") == 1, log[-3000:]


def _one_order(services: Services) -> int:
    sale_id = f"sale-{uuid.uuid4().hex[:8]}"
    load_sale(services.env, sale_id, {"stock": {"A": 1}, "rates": OPEN_RATES})

    async def post() -> int:
        async with Client(services.env.gateway_url) as client:
            return (await client.order(sale_id=sale_id)).status

    return asyncio.run(post())

"""Secured Kafka over mutual TLS, on a real broker started for this module: orders end to
end, the drain's dead letters and their replay, and a client certificate the broker refuses
(none, one from another CA, an expired one) answered clearly."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flashgate.dlq import list_dead_letters
from flashgate.stack.kafka_tls import TlsMaterial
from flashgate.stack.redis_server import RedisServer
from tests.gateway_client import OPEN_RATES, Client
from tests.secured_checks import orders_reach_the_backend, refused_clearly
from tests.secured_kafka import (
    SecuredBroker,
    expired_client_certificate,
    running_secured_broker,
    secured_services,
)
from tests.services import ServiceEnv, Services, http_json, load_sale, wait_until


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
    services = mtls_services
    env = services.env
    services.start_backend()
    drain = services.start_consumer()
    services.start_gateway()
    orders_reach_the_backend(services, 10)
    drain.stop(timeout_s=20)

    # A backend route that answers 404: each order is refused for good, so dead-lettered.
    services.start_consumer(FLASHGATE_DRAIN_BACKEND_URL=f"{env.backend_url}/nope")
    sale_id = f"sale-{uuid.uuid4().hex[:8]}"
    load_sale(env, sale_id, {"stock": {"A": 3}, "rates": OPEN_RATES})

    async def post() -> list[str]:
        async with Client(env.gateway_url) as client:
            answers = [await client.order(sale_id=sale_id, user_id=f"d{i}") for i in range(3)]
        assert [a.status for a in answers] == [202] * 3
        return [str(a.body["order_id"]) for a in answers]

    order_ids = asyncio.run(post())
    settings = env.settings
    assert wait_until(lambda: len(list_dead_letters(settings)) >= 3, 30, interval_s=0.5)
    assert {letter.order_id for letter in list_dead_letters(settings)} == set(order_ids)
    services.running[-1].stop(timeout_s=20)

    services.start_consumer()
    assert "replayed 3 dead letters" in _flashgate(env, "dlq", "replay")

    def delivered() -> bool:
        return int(http_json("GET", f"{env.backend_url}/stats")["orders"]) >= 13

    assert wait_until(delivered, timeout_s=30)
    for order_id in order_ids:
        assert http_json("GET", f"{env.backend_url}/orders/{order_id}")["order_id"] == order_id


def _flashgate(env: ServiceEnv, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "flashgate", *args],
        env=env.process_env(), capture_output=True, text=True, timeout=60, cwd=os.getcwd(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


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

"""Redis over TLS only (Debian's redis-server, --port 0) with an ACL user and client
certificates: orders go end to end; a wrong CA or a wrong password fails clearly
(/readyz 503 naming Redis, one log line, the password in no log).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from flashgate.stack.kafka_broker import KafkaBroker
from flashgate.stack.ports import free_port
from flashgate.stack.redis_server import RedisServer
from flashgate.stack.redis_tls import RedisTlsFiles, ensure_tls_files
from tests.services import ServiceEnv, Services, http_json, load_sale, wait_until

PASSWORD = "tls-s3cret-pw"
ORDERS = 30


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, RedisTlsFiles]]:
    root = tmp_path_factory.mktemp("redis-tls")
    files = ensure_tls_files(root / "certs")
    port = free_port()
    # Each word of a directive is its own argument (redis-server joins them).
    acl = [
        "--user", "default", "off",
        "--user", "flashgate", "on", f">{PASSWORD}", "~*", "&*", "+@all",
    ]  # fmt: skip
    server = RedisServer(port, root / "data", extra_args=[*files.server_args(port), *acl])
    server.start(root / "redis.log")
    try:
        server.wait_listening()
        yield port, files
    finally:
        server.stop()


def _env(
    root: Path, kafka: KafkaBroker, port: int, files: RedisTlsFiles, password: str, ca: Path
) -> ServiceEnv:
    suffix = uuid.uuid4().hex[:8]
    env = ServiceEnv.create(
        root,
        bootstrap=kafka.bootstrap,
        redis_url=f"rediss://flashgate:{password}@127.0.0.1:{port}/0",
        orders_topic=f"orders-{suffix}",
        dlq_topic=f"orders-{suffix}.dlq",
        group_id=f"drain-{suffix}",
    )
    env.variables |= {
        "FLASHGATE_REDIS_SSL_CA_FILE": str(ca),
        "FLASHGATE_REDIS_SSL_CERT_FILE": str(files.client_cert),
        "FLASHGATE_REDIS_SSL_KEY_FILE": str(files.client_key),
    }
    env.create_topics()
    return env


async def _buy(base_url: str, count: int) -> list[int]:
    async with aiohttp.ClientSession() as session:

        async def post(i: int) -> int:
            order = {"sale_id": "tls", "sku": "A", "quantity": 1, "user_id": f"u{i}"}
            async with session.post(f"{base_url}/v1/orders", json=order) as response:
                return response.status

        return await asyncio.gather(*(post(i) for i in range(count)))


def test_orders_end_to_end_over_tls(
    kafka_broker: KafkaBroker, tls_redis: tuple[int, RedisTlsFiles], tmp_path: Path
) -> None:
    port, files = tls_redis
    env = _env(tmp_path, kafka_broker, port, files, PASSWORD, files.ca)
    services = Services(env)
    try:
        services.start_backend()
        services.start_consumer()
        services.start_gateway()
        load_sale(env, "tls", {"stock": {"A": ORDERS}})
        assert http_json("GET", f"{env.gateway_url}/readyz")["checks"]["redis"] is True
        assert asyncio.run(_buy(env.gateway_url, ORDERS)) == [202] * ORDERS

        def stored() -> bool:
            return int(http_json("GET", f"{env.backend_url}/stats")["orders"]) >= ORDERS

        assert wait_until(stored, timeout_s=60)
    finally:
        services.stop_all()
    logs = "".join(path.read_text() for path in tmp_path.glob("*.log"))
    assert PASSWORD not in logs


@pytest.mark.parametrize("fault", ["wrong-ca", "wrong-password"])
def test_wrong_ca_or_password_fails_clearly(
    kafka_broker: KafkaBroker, tls_redis: tuple[int, RedisTlsFiles], tmp_path: Path, fault: str
) -> None:
    port, files = tls_redis
    other_ca = ensure_tls_files(tmp_path / "other-ca").ca
    password = "not-the-password" if fault == "wrong-password" else PASSWORD
    ca = other_ca if fault == "wrong-ca" else files.ca
    env = _env(tmp_path, kafka_broker, port, files, password, ca)
    services = Services(env)
    try:
        gateway = services.start_gateway()
        with pytest.raises(Exception, match="503"):
            http_json("GET", f"{env.gateway_url}/readyz")
        answer = _readyz(env.gateway_url)
        assert answer["checks"] == {"kafka": True, "redis": False}

        def logged() -> bool:
            return "Redis unreachable" in gateway.log_path.read_text()

        assert wait_until(logged, timeout_s=10)
        lines = [line for line in gateway.log_path.read_text().splitlines() if "Redis" in line]
        expected = "certificate verify failed" if fault == "wrong-ca" else "password"
        assert any(expected in line for line in lines), lines
        assert sum("Redis unreachable" in line for line in lines) == 1, lines
    finally:
        services.stop_all()
    assert password not in gateway.log_path.read_text()


def _readyz(base_url: str) -> dict[str, object]:
    async def get() -> dict[str, object]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{base_url}/readyz") as response,
        ):
            assert response.status == 503
            body: dict[str, object] = await response.json()
            return body

    return asyncio.run(get())

"""Test helpers for secured Kafka: a SASL_SSL or mutual-TLS broker on free ports, and the
service settings (FLASHGATE_* variables) that connect to it.

A secured broker starts in ~15 s here, so each test module starts one (module
fixture) and its tests share it, each with its own topics and group.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis as redis_client

from flashgate.stack.kafka_broker import BrokerSpec, KafkaBroker, new_cluster_id
from flashgate.stack.kafka_security import BrokerSecurity, Mode
from flashgate.stack.kafka_tls import TlsMaterial
from flashgate.stack.ports import free_port
from flashgate.stack.redis_server import RedisServer
from tests.gateway_client import new_env
from tests.services import TEST_BROKER_HEAP_MB, ServiceEnv, Services


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


def expired_client_certificate(tls: TlsMaterial, directory: Path) -> tuple[Path, Path]:
    """A client certificate signed by `tls`'s CA that expired in 2020: (certificate, key).
    `openssl ca` is the OpenSSL 3.0 way to set both validity dates."""
    directory.mkdir(parents=True, exist_ok=True)
    key, request, cert = (
        directory / "expired.key",
        directory / "expired.csr",
        directory / "expired.pem",
    )
    (directory / "index.txt").write_text("")
    (directory / "serial").write_text("1000\n")
    config = directory / "ca.cnf"
    config.write_text(
        "[ca]\ndefault_ca = local\n[local]\n"
        f"database = {directory / 'index.txt'}\nnew_certs_dir = {directory}\n"
        f"serial = {directory / 'serial'}\ndefault_md = sha256\npolicy = any\n"
        "[any]\ncommonName = supplied\n"
    )

    def openssl(*args: str | Path) -> None:
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)

    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key)
    openssl("req", "-new", "-key", key, "-subj", "/CN=flashgate", "-out", request)
    openssl(
        "ca", "-batch", "-config", config, "-cert", tls.ca_cert, "-keyfile", tls.ca_key,
        "-startdate", "20200101000000Z", "-enddate", "20200102000000Z", "-notext",
        "-in", request, "-out", cert,
    )  # fmt: skip
    return cert, key


@contextmanager
def secured_services(secured: SecuredBroker, redis: RedisServer, root: Path) -> Iterator[Services]:
    """A test's processes against a secured broker; stopped, and Redis flushed, after."""
    services = Services(secured_env(secured, redis, root))
    try:
        yield services
    finally:
        services.stop_all()
        client = redis_client.Redis.from_url(redis.url)
        try:
            client.flushdb()
        finally:
            client.close()

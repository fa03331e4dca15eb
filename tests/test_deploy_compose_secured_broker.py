"""The secured compose variant's broker settings, run for real on a broker without Docker.

One broker is started from the Maven jars with what compose.secured.yaml gives
`kafka-1`: its certificate and credentials made by `kafka-tls/make-tls.sh`, its
storage formatted by the very script of its `command` (with `--add-scram`), its
KAFKA_* variables turned into broker properties by the Kafka image's rules
(`KAFKA_A_B` -> `a.b`; the keystore and its passwords from the `*_FILENAME` and
`*_CREDENTIALS` files in /etc/kafka/secrets) and its JAAS file from KAFKA_OPTS.
Only what a single machine needs changes: host names and ports (the loopback,
free ports; the certificate also names localhost), file paths (a temporary
directory), and replication 1. Then flashgate connects with the settings the
gateway's compose environment loads into, the brokers' own user (healthcheck,
kafka-init) connects with client.properties, and a plaintext client and a wrong
password are refused.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient

from flashgate.kafka.config import producer_config
from flashgate.kafka.topics import ensure_topics, wait_for_broker
from flashgate.settings import Settings, load_settings
from flashgate.stack.kafka_broker import JVM_FLAGS
from flashgate.stack.kafka_jars import kafka_classpath
from flashgate.stack.ports import free_port, wait_for_port
from flashgate.stack.process import ManagedProcess
from tests.deploy_support import COMPOSE_DIR, COMPOSE_FILE, COMPOSE_SECURED_FILE, compose_merged
from tests.services import TEST_BROKER_HEAP_MB

pytestmark = pytest.mark.e2e

COMPOSE_TOML = COMPOSE_DIR / "config" / "flashgate.toml"
MAKE_TLS = COMPOSE_DIR / "kafka-tls" / "make-tls.sh"
SECRETS_DIR = "/etc/kafka/secrets"
FLASHGATE_SECRET = "/run/secrets/kafka-flashgate-password"
FORMAT_TIMEOUT_S = 120
START_TIMEOUT_S = 90
REFUSED_WITHIN_S = 6
# Set by the image's configure script from files, or JVM options: not broker properties.
NOT_PROPERTIES = frozenset(
    {
        "KAFKA_OPTS",
        "KAFKA_HEAP_OPTS",
        "KAFKA_SSL_KEYSTORE_FILENAME",
        "KAFKA_SSL_KEYSTORE_CREDENTIALS",
        "KAFKA_SSL_KEY_CREDENTIALS",
    }
)
# One broker instead of three.
SINGLE_NODE = {
    "default.replication.factor": "1",
    "min.insync.replicas": "1",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "6",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
}


@dataclass(frozen=True)
class ComposeBroker:
    port: int
    tls: Path
    public_ca: Path
    password_file: Path


def _local(value: str, paths: dict[str, str]) -> str:
    for inside, outside in paths.items():
        value = value.replace(inside, outside)
    return value


def _image_properties(env: dict[str, str], tls: Path) -> dict[str, str]:
    """Broker properties as the Kafka image makes them from its environment."""
    props = {
        name[len("KAFKA_") :].lower().replace("_", "."): value
        for name, value in env.items()
        if name.startswith("KAFKA_") and name not in NOT_PROPERTIES
    }
    # /etc/kafka/docker/configure: the keystore and its passwords come from files.
    props["ssl.keystore.location"] = str(tls / env["KAFKA_SSL_KEYSTORE_FILENAME"])
    props["ssl.keystore.password"] = (tls / env["KAFKA_SSL_KEYSTORE_CREDENTIALS"]).read_text()
    props["ssl.key.password"] = (tls / env["KAFKA_SSL_KEY_CREDENTIALS"]).read_text()
    return props


def _interpolated(text: str) -> str:
    return re.sub(r"(?<!\$)\$\{[^}]*\}", "from-the-environment", text).replace("$$", "$")


@pytest.fixture(scope="module")
def compose_services() -> dict[str, Any]:
    services: dict[str, Any] = compose_merged(COMPOSE_FILE, COMPOSE_SECURED_FILE)["services"]
    return services


@pytest.fixture(scope="module")
def compose_broker(
    kafka_libs: Path, tmp_path_factory: pytest.TempPathFactory, compose_services: dict[str, Any]
) -> Iterator[ComposeBroker]:
    root = tmp_path_factory.mktemp("compose-secured")
    tls, public = root / "tls", root / "public"
    made = subprocess.run(
        ["bash", str(MAKE_TLS)],
        env={**os.environ, "CA_DIR": str(root / "ca"), "TLS_DIR": str(tls),
             "PUBLIC_DIR": str(public), "BROKERS": "kafka-1", "OWNER": "root"},
        capture_output=True, text=True, timeout=FORMAT_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    password_file = root / "kafka-flashgate-password"
    password_file.write_text(secrets.token_hex(24) + "\n")
    password_file.chmod(0o600)
    port, controller_port = free_port(), free_port()
    paths = {SECRETS_DIR: str(tls), FLASHGATE_SECRET: str(password_file)}
    service = compose_services["kafka-1"]
    env = {
        name: _local(_interpolated(str(value)), paths)
        for name, value in service["environment"].items()
    }
    env.update(
        {
            "KAFKA_LISTENERS": env["KAFKA_LISTENERS"]
            .replace("://:9092", f"://127.0.0.1:{port}")
            .replace("://:9093", f"://127.0.0.1:{controller_port}"),
            "KAFKA_ADVERTISED_LISTENERS": env["KAFKA_ADVERTISED_LISTENERS"].replace(
                "kafka-1:9092", f"localhost:{port}"
            ),
            "KAFKA_CONTROLLER_QUORUM_VOTERS": f"{env['KAFKA_NODE_ID']}@localhost:{controller_port}",
            "KAFKA_LOG_DIRS": str(root / "data"),
        }
    )
    # Format the storage with the service's own script, up to its `exec` of the image's start.
    (script,) = service["command"]
    script = _local(
        _interpolated(script), {**paths, "/tmp/format.properties": str(root / "format.properties")}
    )
    storage_tool = root / "kafka-storage.sh"
    storage_tool.write_text(
        f"#!/bin/sh\nexec {shlex.quote(_java())} -Xmx256m -cp "
        f'{shlex.quote(kafka_classpath(kafka_libs))} kafka.tools.StorageTool "$@"\n'
    )
    storage_tool.chmod(0o700)
    script = script.replace("/opt/kafka/bin/kafka-storage.sh", str(storage_tool))
    assert "exec /etc/kafka/docker/run" in script
    script = script.replace("exec /etc/kafka/docker/run", "exit 0")
    formatted = subprocess.run(
        ["bash", "-ec", script],
        env={**os.environ, **{k: v for k, v in env.items() if k != "KAFKA_OPTS"}},
        capture_output=True, text=True, timeout=FORMAT_TIMEOUT_S, check=False,
    )  # fmt: skip
    output = formatted.stdout + formatted.stderr
    for secret in (password_file.read_text().strip(), (tls / "broker-password").read_text()):
        output = output.replace(secret.strip(), "***")
    assert formatted.returncode == 0, output
    properties = {**_image_properties(env, tls), **SINGLE_NODE}
    properties_file = root / "server.properties"
    properties_file.write_text("".join(f"{k}={v}\n" for k, v in properties.items()))
    properties_file.chmod(0o600)
    broker = ManagedProcess(
        "compose-kafka-1",
        [_java(), f"-Xms{TEST_BROKER_HEAP_MB}m", f"-Xmx{TEST_BROKER_HEAP_MB}m", *JVM_FLAGS,
         *shlex.split(env["KAFKA_OPTS"]), "-cp", kafka_classpath(kafka_libs), "kafka.Kafka",
         str(properties_file)],
        log_path=root / "kafka.log",
    )  # fmt: skip
    broker.start()
    try:
        wait_for_port("compose kafka-1", "127.0.0.1", port, START_TIMEOUT_S)
        yield ComposeBroker(port, tls, public / "ca.pem", password_file)
    finally:
        broker.stop(30)


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        pytest.fail("a Java runtime is needed: apt-get install openjdk-17-jre-headless")
    return java


def _gateway_settings(
    compose_services: dict[str, Any], broker: ComposeBroker, **overrides: str
) -> Settings:
    env = {
        name: _interpolated(str(value))
        for name, value in compose_services["gateway"]["environment"].items()
    }
    paths = {
        FLASHGATE_SECRET: str(broker.password_file),
        "/etc/flashgate-kafka/ca.pem": str(broker.public_ca),
    }
    env = {name: _local(value, paths) for name, value in env.items()}
    topic = f"orders-{uuid.uuid4().hex[:8]}"
    env.update(
        {
            "FLASHGATE_KAFKA_BOOTSTRAP_SERVERS": f"localhost:{broker.port}",
            "FLASHGATE_KAFKA_ORDERS_TOPIC": topic,
            "FLASHGATE_KAFKA_DLQ_TOPIC": topic + ".dlq",
            "FLASHGATE_KAFKA_REPLICATION_FACTOR": "1",
            "FLASHGATE_KAFKA_MIN_INSYNC_REPLICAS": "1",
            **overrides,
        }
    )
    return load_settings(COMPOSE_TOML, environ=env)


def _refused(config: dict[str, Any]) -> bool:
    admin = AdminClient({**config, "socket.timeout.ms": 3000})
    try:
        admin.list_topics(timeout=REFUSED_WITHIN_S)
    except KafkaException:
        return True
    return False


def test_flashgate_produces_with_the_compose_gateway_settings(
    compose_services: dict[str, Any], compose_broker: ComposeBroker
) -> None:
    settings = _gateway_settings(compose_services, compose_broker)
    assert settings.kafka.security_protocol == "SASL_SSL"
    wait_for_broker(settings.kafka, START_TIMEOUT_S)
    ensure_topics(settings.kafka)
    delivered: list[Any] = []
    producer = Producer(producer_config(settings.kafka, "compose-secured-test"))
    producer.produce(
        settings.kafka.orders_topic,
        b"order",
        key=b"k",
        on_delivery=lambda e, m: delivered.append(e),
    )
    assert producer.flush(30) == 0
    assert delivered == [None]


def test_the_brokers_own_user_connects_with_client_properties(
    compose_broker: ComposeBroker,
) -> None:
    text = (compose_broker.tls / "client.properties").read_text()
    properties = dict(line.split("=", 1) for line in text.splitlines())
    (username, password) = re.findall(
        r'username="([^"]+)" password="([^"]+)"', properties["sasl.jaas.config"]
    )[0]
    config = {
        "bootstrap.servers": f"localhost:{compose_broker.port}",
        "security.protocol": properties["security.protocol"],
        "sasl.mechanism": properties["sasl.mechanism"],
        "sasl.username": username,
        "sasl.password": password,
        "ssl.ca.location": properties["ssl.truststore.location"],
    }
    metadata = AdminClient(config).list_topics(timeout=30)
    assert metadata.brokers


def test_a_plaintext_client_is_refused(compose_broker: ComposeBroker) -> None:
    assert _refused({"bootstrap.servers": f"localhost:{compose_broker.port}"})


def test_a_wrong_password_is_refused(
    compose_services: dict[str, Any], compose_broker: ComposeBroker, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong-password"
    wrong.write_text(secrets.token_hex(24) + "\n")
    settings = _gateway_settings(
        compose_services, compose_broker, FLASHGATE_KAFKA_SASL_PASSWORD_FILE=str(wrong)
    )
    config = {
        "bootstrap.servers": settings.kafka.bootstrap_servers,
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": settings.kafka.sasl_mechanism,
        "sasl.username": settings.kafka.sasl_username,
        "sasl.password": wrong.read_text().strip(),
        "ssl.ca.location": settings.kafka.ssl_ca_location,
    }
    assert _refused(config)

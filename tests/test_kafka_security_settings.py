"""Secured Kafka settings: combinations checked at start, `[kafka.client]` checked by
librdkafka, one configuration builder for every client, secrets masked everywhere, and a
refused connection logged once."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import msgspec
import pytest
from confluent_kafka import KafkaError

from flashgate.errors import ConfigError
from flashgate.kafka.config import admin_config, consumer_config, producer_config, reader_config
from flashgate.kafka.connection import Announcements, KafkaConnection
from flashgate.kafka.security import security_properties
from flashgate.secret import Secret, mask_secret
from flashgate.settings import DrainSettings, KafkaSettings, load_settings
from flashgate.stack.kafka_tls import TlsMaterial

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "s3cr3t-Pa55word-never-shown"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    return TlsMaterial(tmp_path_factory.mktemp("tls")).ensure()


def _load(tmp_path: Path, toml: str = "", **environ: str) -> KafkaSettings:
    path = tmp_path / "flashgate.toml"
    path.write_text(toml)
    return load_settings(path, environ=environ).kafka


def _sasl(tls: TlsMaterial, **extra: str) -> dict[str, str]:
    return {
        "FLASHGATE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "FLASHGATE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "FLASHGATE_KAFKA_SASL_USERNAME": "flashgate",
        "FLASHGATE_KAFKA_SASL_PASSWORD": PASSWORD,
        "FLASHGATE_KAFKA_SSL_CA_LOCATION": str(tls.ca_cert),
        **extra,
    }


def test_plaintext_stays_the_default(tmp_path: Path) -> None:
    kafka = _load(tmp_path)
    assert kafka.security_protocol == "PLAINTEXT"
    assert security_properties(kafka) == {"security.protocol": "plaintext"}


def test_sasl_ssl_from_the_environment_reaches_every_client(
    tmp_path: Path, tls: TlsMaterial
) -> None:
    kafka = _load(tmp_path, '[kafka.client]\n"socket.timeout.ms" = 20000\n', **_sasl(tls))
    assert isinstance(kafka.sasl_password, Secret)
    expected = {
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "flashgate",
        "sasl.password": PASSWORD,
        "ssl.ca.location": str(tls.ca_cert),
        "socket.timeout.ms": 20000,
    }
    for config in (
        producer_config(kafka, "p"),
        consumer_config(kafka, DrainSettings(), "c"),
        reader_config(kafka, "r", "g"),
        admin_config(kafka),
    ):
        assert expected.items() <= config.items()
    producer = producer_config(kafka, "p")
    assert (producer["enable.idempotence"], producer["acks"]) == (True, "all")


def test_every_kafka_client_is_built_from_the_shared_configuration() -> None:
    """No client of flashgate writes its own librdkafka configuration: one that did would
    connect without the security settings."""
    # A literal dict not starting from a builder (or, in the settings check, the table).
    built_by_hand = re.compile(
        r"\b(Producer|Consumer|AdminClient)\(\s*\{(?!\s*(#[^\n]*\n\s*)*\*\*(kafka\.client|\w+_config\())"
    )
    offenders = []
    for package in ("flashgate", "gateway", "order_consumer", "loadtest"):
        for source in (REPO / package).rglob("*.py"):
            if built_by_hand.search(source.read_text()):
                offenders.append(str(source.relative_to(REPO)))
    assert offenders == []


def test_the_password_file_is_read_when_a_client_is_built(tmp_path: Path, tls: TlsMaterial) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text("first\n")
    env = _sasl(tls, FLASHGATE_KAFKA_SASL_PASSWORD_FILE=str(secret_file))
    del env["FLASHGATE_KAFKA_SASL_PASSWORD"]
    kafka = _load(tmp_path, **env)
    assert admin_config(kafka)["sasl.password"] == "first"
    secret_file.write_text("rotated\n")
    assert admin_config(kafka)["sasl.password"] == "rotated"


def test_mutual_tls(tmp_path: Path, tls: TlsMaterial) -> None:
    kafka = _load(
        tmp_path,
        FLASHGATE_KAFKA_SECURITY_PROTOCOL="SSL",
        FLASHGATE_KAFKA_SSL_CA_LOCATION=str(tls.ca_cert),
        FLASHGATE_KAFKA_SSL_CERTIFICATE_LOCATION=str(tls.client_cert),
        FLASHGATE_KAFKA_SSL_KEY_LOCATION=str(tls.client_key),
    )
    assert security_properties(kafka) == {
        "security.protocol": "ssl",
        "ssl.ca.location": str(tls.ca_cert),
        "ssl.certificate.location": str(tls.client_cert),
        "ssl.key.location": str(tls.client_key),
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"FLASHGATE_KAFKA_SASL_MECHANISM": ""}, "needs kafka.sasl_mechanism"),
        ({"FLASHGATE_KAFKA_SASL_USERNAME": ""}, "needs kafka.sasl_username"),
        ({"FLASHGATE_KAFKA_SASL_PASSWORD": ""}, "sasl_password or sasl_password_file"),
        ({"FLASHGATE_KAFKA_SASL_PASSWORD_FILE": "/nonexistent"}, "not both"),
        ({"FLASHGATE_KAFKA_SSL_CA_LOCATION": ""}, '"probe"'),
        ({"FLASHGATE_KAFKA_SSL_KEY_LOCATION": "/etc/hostname"}, "needs both"),
        ({"FLASHGATE_KAFKA_SASL_MECHANISM": "GSSAPI"}, "invalid settings"),
        (
            {"FLASHGATE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"},
            "kafka.ssl_ca_location is set but kafka.security_protocol is SASL_PLAINTEXT",
        ),
        (
            {"FLASHGATE_KAFKA_SECURITY_PROTOCOL": "SSL"},
            "kafka.sasl_mechanism is set but kafka.security_protocol is SSL",
        ),
    ],
)
def test_a_combination_that_cannot_work_is_refused_at_start(
    tmp_path: Path, tls: TlsMaterial, change: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        _load(tmp_path, **_sasl(tls, **change))
    assert PASSWORD not in str(error.value)


@pytest.mark.parametrize(
    "change",
    [
        {"FLASHGATE_KAFKA_SSL_CA_LOCATION": "/nonexistent/ca.pem"},
        {"FLASHGATE_KAFKA_SASL_PASSWORD": "", "FLASHGATE_KAFKA_SASL_PASSWORD_FILE": "/nonexistent"},
    ],
)
def test_a_file_that_cannot_be_read_is_refused_when_a_client_is_built(
    tmp_path: Path, tls: TlsMaterial, change: dict[str, str]
) -> None:
    kafka = _load(tmp_path, **_sasl(tls, **change))
    with pytest.raises(ConfigError, match=r"cannot read /nonexistent"):
        producer_config(kafka, "p")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('"no.such.property" = 1', 'No such configuration property: "no.such.property"'),
        ('"socket.timeout.ms" = "soon"', 'configuration property "socket.timeout.ms"'),
        ('"enable.idempotence" = false', "[kafka.client] enable.idempotence: set by flashgate"),
        ('"sasl.password" = "x"', "[kafka.client] sasl.password: set by flashgate"),
        ('"auto.offset.reset" = "latest"', "[kafka.client] auto.offset.reset: set by flashgate"),
        ('"ssl.key.password" = "x"', "[kafka.client] ssl.key.password holds a secret"),
    ],
)
def test_a_bad_client_property_is_refused_at_start_with_its_name(
    tmp_path: Path, table: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        _load(tmp_path, f"[kafka.client]\n{table}\n")


def test_a_secret_never_shows(tmp_path: Path, tls: TlsMaterial) -> None:
    path = tmp_path / "flashgate.toml"
    path.write_text("")
    settings = load_settings(path, environ=_sasl(tls))
    for shown in (
        repr(settings),
        str(settings),
        f"{settings.kafka}",
        f"{settings.kafka.sasl_password}",
    ):
        assert PASSWORD not in shown
    assert "Secret('***')" in repr(settings.kafka)
    with pytest.raises(TypeError):
        msgspec.json.encode(settings)
    dumped = msgspec.json.encode(settings, enc_hook=mask_secret).decode()
    assert PASSWORD not in dumped and '"sasl_password":"***"' in dumped
    assert settings.kafka.sasl_password.reveal() == PASSWORD


def test_a_refused_connection_is_logged_once_and_its_recovery_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    connection = KafkaConnection("test-client", "SASL_SSL", announcements=Announcements())
    text = (
        "sasl_ssl://127.0.0.1:1/bootstrap: SASL authentication error: test {} "
        "(after {}ms in state AUTH_REQ)"
    )
    marker = f"marker-{id(connection)}"
    with caplog.at_level(logging.INFO, logger="flashgate.kafka"):
        for attempt in range(5):
            connection.on_error(KafkaError(-169, text.format(marker, attempt)))
            connection.on_error(KafkaError(-187, f"{attempt}/1 brokers are down"))
        assert connection.refusal is not None and marker in connection.refusal
        connection.connected()
        assert connection.refusal is None and connection.cause is None
    lines = [r.getMessage() for r in caplog.records if r.name == "flashgate.kafka"]
    assert [line for line in lines if marker in line] == [
        f"test-client: Kafka refuses the connection: "
        f"sasl_ssl://127.0.0.1:1/bootstrap: SASL authentication error: test {marker}"
    ]
    assert lines[-1] == "test-client: Kafka reachable again"


def test_a_plaintext_client_at_a_tls_listener_is_named(caplog: pytest.LogCaptureFixture) -> None:
    connection = KafkaConnection("plain", "PLAINTEXT", announcements=Announcements())
    closed = (
        "127.0.0.1:1/bootstrap: Disconnected: connection closed by peer "
        "(after 1ms in state APIVERSION_QUERY)"
    )
    connection.log(logging.INFO, "%s [%s] %s", "FAIL", "rdkafka#producer-1", closed)
    assert connection.refusal is None  # one close can be a broker going down
    for _ in range(3):
        connection.log(logging.INFO, "%s [%s] %s", "FAIL", "rdkafka#producer-1", closed)
    assert connection.refusal is not None
    assert "kafka.security_protocol is PLAINTEXT" in connection.refusal


def test_the_clients_of_a_process_say_one_refusal_once(caplog: pytest.LogCaptureFixture) -> None:
    """A producer and a consumer meeting the same untrusted CA word it differently."""
    # Their own process-wide registry: other tests' clients have said causes already.
    shared = Announcements()
    producer = KafkaConnection("p", "SASL_SSL", announcements=shared)
    consumer = KafkaConnection("c", "SASL_SSL", announcements=shared)
    with caplog.at_level(logging.INFO, logger="flashgate.kafka"):
        consumer.on_error(
            KafkaError(-195, "b/bootstrap: error:0A000086:SSL routines::certificate verify failed")
        )
        producer.on_error(KafkaError(-181, "b/bootstrap: SSL handshake failed: certificate ..."))
        assert producer.refusal is not None and consumer.refusal is not None
        consumer.connected()
        producer.connected()
    lines = [r.getMessage() for r in caplog.records if r.name == "flashgate.kafka"]
    assert [line for line in lines if "refuses" in line] == [
        "c: Kafka refuses the connection: "
        "b/bootstrap: error:0A000086:SSL routines::certificate verify failed"
    ]
    assert lines[-1] == "c: Kafka reachable again"

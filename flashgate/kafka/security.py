"""How every Kafka client connects: the security part of librdkafka's configuration.

`security_properties` turns `[kafka]`'s typed security settings into
librdkafka properties; `check_kafka_settings` refuses, when the settings load, a
combination that could not work or would silently be ignored, and any
`[kafka.client]` property librdkafka does not know (asked of librdkafka
itself, by building a throwaway client that never connects); a CA,
certificate, key or password file that cannot be read is refused when the
first client is built, at the start of the process. Error messages
name settings and properties, never a value, so a password cannot leak
through them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from flashgate.errors import ConfigError

if TYPE_CHECKING:
    from flashgate.settings import KafkaSettings

SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
# The CA "location" that asks librdkafka to find the system's trust store.
SYSTEM_CA = "probe"

# Set by a typed [kafka] key (so validated and, for the password, masked) or by
# flashgate for its guarantees (acks=all, offsets stored after delivery, ...):
# [kafka.client] may not change them.
OWNED_PROPERTIES = frozenset(
    {
        "bootstrap.servers",
        "metadata.broker.list",
        "security.protocol",
        "sasl.mechanism",
        "sasl.mechanisms",
        "sasl.username",
        "sasl.password",
        "ssl.ca.location",
        "ssl.certificate.location",
        "ssl.key.location",
        "client.id",
        "group.id",
        "enable.idempotence",
        "acks",
        "request.required.acks",
        "message.timeout.ms",
        "delivery.timeout.ms",
        "enable.auto.offset.store",
        # "latest" would skip deleted records silently; the drain's loss watch needs
        # "earliest" to see the gap (order_consumer/loss_watch.py).
        "auto.offset.reset",
        "isolation.level",
        "error_cb",
        "logger",
        "log_level",
    }
)
# Properties whose value is a secret: they have no place in a table printed as is.
SECRET_MARKERS = ("password", "secret", ".pem", "jaas")


def check_kafka_settings(kafka: KafkaSettings) -> None:
    """Raise ConfigError for a security combination that cannot work, or a bad client property."""
    protocol = kafka.security_protocol
    sasl = protocol in SASL_PROTOCOLS
    tls = protocol in TLS_PROTOCOLS
    if sasl:
        missing = [
            name
            for name, value in (
                ("sasl_mechanism", kafka.sasl_mechanism),
                ("sasl_username", kafka.sasl_username),
                (
                    "sasl_password or sasl_password_file",
                    kafka.sasl_password or kafka.sasl_password_file,
                ),
            )
            if not value
        ]
        if missing:
            raise ConfigError(
                f"kafka.security_protocol {protocol} needs kafka.{', kafka.'.join(missing)}"
            )
        if kafka.sasl_password and kafka.sasl_password_file:
            raise ConfigError("set kafka.sasl_password or kafka.sasl_password_file, not both")
    else:
        _refuse_unused(
            protocol,
            "SASL_PLAINTEXT or SASL_SSL",
            sasl_mechanism=kafka.sasl_mechanism,
            sasl_username=kafka.sasl_username,
            sasl_password=kafka.sasl_password,
            sasl_password_file=kafka.sasl_password_file,
        )
    if tls:
        if not kafka.ssl_ca_location:
            raise ConfigError(
                f"kafka.security_protocol {protocol} needs kafka.ssl_ca_location: the CA "
                f"certificate (PEM) that signed the brokers' certificates, or "
                f'"{SYSTEM_CA}" for the system\'s trust store'
            )
        if bool(kafka.ssl_certificate_location) != bool(kafka.ssl_key_location):
            raise ConfigError(
                "mutual TLS needs both kafka.ssl_certificate_location and kafka.ssl_key_location"
            )
    else:
        _refuse_unused(
            protocol,
            "SSL or SASL_SSL",
            ssl_ca_location=kafka.ssl_ca_location,
            ssl_certificate_location=kafka.ssl_certificate_location,
            ssl_key_location=kafka.ssl_key_location,
        )
    _check_client_table(kafka)


def _refuse_unused(protocol: str, needs: str, **values: object) -> None:
    used = [name for name, value in values.items() if value]
    if used:
        raise ConfigError(
            f"kafka.{used[0]} is set but kafka.security_protocol is {protocol}: it is used "
            f"only with {needs}"
        )


def _readable(name: str, path: str) -> None:
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc.strerror}") from None


def _check_client_table(kafka: KafkaSettings) -> None:
    for key in kafka.client:
        if key in OWNED_PROPERTIES:
            raise ConfigError(
                f"[kafka.client] {key}: set by flashgate (a [kafka] setting or one of its "
                f"guarantees), not here"
            )
        if any(marker in key for marker in SECRET_MARKERS):
            raise ConfigError(
                f"[kafka.client] {key} holds a secret: this table is not masked; use the "
                f"[kafka] settings (sasl_password, sasl_password_file, ssl_key_location)"
            )
    if kafka.client:
        _ask_librdkafka(kafka)


def _ask_librdkafka(kafka: KafkaSettings) -> None:
    # A Producer without bootstrap.servers never connects; building one makes
    # librdkafka check every property name and value (~0.1 ms).
    from confluent_kafka import KafkaException, Producer

    try:
        Producer({**kafka.client, "log_level": 0})
    except KafkaException as exc:
        raise ConfigError(f"[kafka.client]: {exc.args[0].str()}") from None


def sasl_password(kafka: KafkaSettings) -> str:
    """The SASL password, from the setting or read now from its file (a rotated Secret is
    picked up by the next client built)."""
    if kafka.sasl_password:
        return kafka.sasl_password.reveal()
    try:
        return Path(kafka.sasl_password_file).read_text().strip()
    except OSError as exc:
        raise ConfigError(
            f"kafka.sasl_password_file: cannot read {kafka.sasl_password_file}: {exc.strerror}"
        ) from None


def _check_files(kafka: KafkaSettings) -> None:
    # Here rather than in check_kafka_settings: the settings load anywhere (a deploy's
    # file is checked on a machine without its mounted secrets); a client is built only
    # where they must exist, at the start of the process that needs it.
    names = ["ssl_certificate_location", "ssl_key_location"]
    if kafka.ssl_ca_location != SYSTEM_CA:
        names.append("ssl_ca_location")
    for name in names:
        path = getattr(kafka, name)
        if path:
            _readable(f"kafka.{name}", path)


def security_properties(kafka: KafkaSettings) -> dict[str, Any]:
    """The librdkafka properties that make a client connect as `[kafka]` says; raises
    ConfigError when a file they name cannot be read."""
    _check_files(kafka)
    props: dict[str, Any] = {"security.protocol": kafka.security_protocol.lower()}
    if kafka.security_protocol in SASL_PROTOCOLS:
        props["sasl.mechanism"] = kafka.sasl_mechanism
        props["sasl.username"] = kafka.sasl_username
        props["sasl.password"] = sasl_password(kafka)
    if kafka.security_protocol in TLS_PROTOCOLS:
        props["ssl.ca.location"] = kafka.ssl_ca_location
        if kafka.ssl_certificate_location:
            props["ssl.certificate.location"] = kafka.ssl_certificate_location
            props["ssl.key.location"] = kafka.ssl_key_location
    return props

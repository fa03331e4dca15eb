"""A local broker's secured client listener: SASL_SSL with SCRAM-SHA-512, or mutual TLS.

`BrokerSecurity.prepare` makes (once) the TLS material and the SCRAM
passwords in a directory; the broker then gets the listener's properties and
the storage tool the `--add-scram` arguments that create the SCRAM users when
the storage is formatted. `client_variables` are the FLASHGATE_KAFKA_*
settings every flashgate process needs to connect. The controller listener
stays plaintext on loopback: only the broker itself talks to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec

from flashgate.secret import Secret
from flashgate.settings import KafkaSettings
from flashgate.stack.kafka_tls import TlsMaterial, new_password, write_secret_file

Mode = Literal["sasl_ssl", "mtls"]
MECHANISM = "SCRAM-SHA-512"
CLIENT_USER = "flashgate"
# The broker's own SCRAM user, for the connections it makes to itself.
BROKER_USER = "broker"


def _password(path: Path) -> str:
    if not path.is_file():
        write_secret_file(path, new_password())
    return path.read_text().strip()


@dataclass(frozen=True)
class BrokerSecurity:
    mode: Mode
    tls: TlsMaterial
    password_file: Path
    broker_password_file: Path

    @classmethod
    def prepare(cls, mode: Mode, directory: Path) -> BrokerSecurity:
        tls = TlsMaterial(directory).ensure(CLIENT_USER)
        security = cls(
            mode, tls, directory / f"{CLIENT_USER}.password", directory / "broker.password"
        )
        _password(security.password_file)
        _password(security.broker_password_file)
        return security

    @property
    def listener(self) -> str:
        return "SASL_SSL" if self.mode == "sasl_ssl" else "SSL"

    def broker_properties(
        self, host: str, port: int, controller_port: int, advertised: str
    ) -> dict[str, str]:
        keystore_password = self.tls.keystore_password()
        props = {
            "listeners": f"{self.listener}://{host}:{port},CONTROLLER://{host}:{controller_port}",
            "advertised.listeners": f"{self.listener}://{advertised}",
            "inter.broker.listener.name": self.listener,
            "listener.security.protocol.map": (
                f"{self.listener}:{self.listener},CONTROLLER:PLAINTEXT"
            ),
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(self.tls.broker_keystore),
            "ssl.keystore.password": keystore_password,
            "ssl.key.password": keystore_password,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.tls.ca_cert),
        }
        if self.mode == "mtls":
            props["ssl.client.auth"] = "required"
        else:
            jaas = (
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{BROKER_USER}" password="{_password(self.broker_password_file)}";'
            )
            props.update(
                {
                    "sasl.enabled.mechanisms": MECHANISM,
                    "sasl.mechanism.inter.broker.protocol": MECHANISM,
                    f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config": jaas,
                }
            )
        return props

    def passwords(self) -> list[str]:
        """Every password of this listener, to mask in what a tool prints."""
        return [
            _password(self.password_file),
            _password(self.broker_password_file),
            self.tls.keystore_password(),
        ]

    def format_args(self) -> list[str]:
        """The storage tool's arguments creating the SCRAM users (none for mutual TLS)."""
        if self.mode != "sasl_ssl":
            return []
        users = [
            (CLIENT_USER, _password(self.password_file)),
            (BROKER_USER, _password(self.broker_password_file)),
        ]
        args: list[str] = []
        for name, password in users:
            args += ["--add-scram", f"{MECHANISM}=[name={name},password={password}]"]
        return args

    def client_variables(self) -> dict[str, str]:
        """FLASHGATE_KAFKA_* settings that make a flashgate process connect to this listener."""
        variables = {
            "FLASHGATE_KAFKA_SECURITY_PROTOCOL": self.listener,
            "FLASHGATE_KAFKA_SSL_CA_LOCATION": str(self.tls.ca_cert),
        }
        if self.mode == "sasl_ssl":
            variables.update(
                {
                    "FLASHGATE_KAFKA_SASL_MECHANISM": MECHANISM,
                    "FLASHGATE_KAFKA_SASL_USERNAME": CLIENT_USER,
                    "FLASHGATE_KAFKA_SASL_PASSWORD_FILE": str(self.password_file),
                }
            )
        else:
            variables.update(
                {
                    "FLASHGATE_KAFKA_SSL_CERTIFICATE_LOCATION": str(self.tls.client_cert),
                    "FLASHGATE_KAFKA_SSL_KEY_LOCATION": str(self.tls.client_key),
                }
            )
        return variables

    def kafka_settings(self, kafka: KafkaSettings) -> KafkaSettings:
        """`kafka` connecting to this listener, as `client_variables` say."""
        if self.mode == "sasl_ssl":
            return msgspec.structs.replace(
                kafka,
                security_protocol="SASL_SSL",
                sasl_mechanism=MECHANISM,
                sasl_username=CLIENT_USER,
                sasl_password=Secret(),
                sasl_password_file=str(self.password_file),
                ssl_ca_location=str(self.tls.ca_cert),
            )
        return msgspec.structs.replace(
            kafka,
            security_protocol="SSL",
            ssl_ca_location=str(self.tls.ca_cert),
            ssl_certificate_location=str(self.tls.client_cert),
            ssl_key_location=str(self.tls.client_key),
        )

    def describe(self) -> str:
        """Where a user's own client (kcat, a script) finds what it needs: paths, no secret."""
        if self.mode == "sasl_ssl":
            return (
                f"SASL_SSL, {MECHANISM} user {CLIENT_USER}, password in {self.password_file}, "
                f"CA {self.tls.ca_cert}"
            )
        return (
            f"mutual TLS, CA {self.tls.ca_cert}, client certificate {self.tls.client_cert}, "
            f"key {self.tls.client_key}"
        )

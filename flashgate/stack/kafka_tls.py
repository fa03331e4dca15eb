"""TLS material for a secured local Kafka: a CA, the broker's keystore, a client certificate.

Made once with openssl into a directory (`.flashgate/kafka-tls/` for `make up`,
a temporary one in tests) and reused after: a CA key that lives as long as
the state directory, a broker certificate for 127.0.0.1 and localhost (both
server and client use, as the broker also connects to itself), a PKCS12
keystore for the broker's JVM, and a client certificate with its
unencrypted PEM key for mutual TLS. Keys and passwords are written 0600.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from flashgate.errors import StackError

VALID_DAYS = 825
KEY_BITS = 2048
OPENSSL_TIMEOUT_S = 60


@dataclass(frozen=True)
class TlsMaterial:
    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def broker_keystore(self) -> Path:
        return self.directory / "broker.p12"

    @property
    def keystore_password_file(self) -> Path:
        return self.directory / "broker.p12.password"

    @property
    def client_cert(self) -> Path:
        return self.directory / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.directory / "client.key"

    def keystore_password(self) -> str:
        return self.keystore_password_file.read_text().strip()

    def ensure(self, client_name: str = "flashgate") -> TlsMaterial:
        """Create whatever is missing (idempotent); return self."""
        if self.ca_cert.is_file() and self.broker_keystore.is_file() and self.client_key.is_file():
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        if not self.ca_cert.is_file():
            _new_key(self.ca_key)
            _openssl(
                "req", "-x509", "-new", "-key", self.ca_key, "-days", str(VALID_DAYS),
                "-subj", "/CN=flashgate local Kafka CA", "-out", self.ca_cert,
            )  # fmt: skip
        self._broker()
        self._client(client_name)
        return self

    def _sign(self, key: Path, cert: Path, subject: str, extensions: str) -> None:
        request = cert.with_suffix(".csr")
        ext_file = cert.with_suffix(".ext")
        ext_file.write_text(extensions)
        _openssl("req", "-new", "-key", key, "-subj", subject, "-out", request)
        _openssl(
            "x509", "-req", "-in", request, "-CA", self.ca_cert, "-CAkey", self.ca_key,
            "-CAcreateserial", "-days", str(VALID_DAYS), "-extfile", ext_file, "-out", cert,
        )  # fmt: skip
        request.unlink()
        ext_file.unlink()

    def _broker(self) -> None:
        key, cert = self.directory / "broker.key", self.directory / "broker.pem"
        _new_key(key)
        self._sign(
            key,
            cert,
            "/CN=localhost",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        password = secrets.token_urlsafe(24)
        _write_private(self.keystore_password_file, password + "\n")
        _openssl(
            "pkcs12", "-export", "-in", cert, "-inkey", key, "-certfile", self.ca_cert,
            "-name", "broker", "-passout", f"file:{self.keystore_password_file}",
            "-out", self.broker_keystore,
        )  # fmt: skip
        self.broker_keystore.chmod(0o600)

    def _client(self, name: str) -> None:
        _new_key(self.client_key)
        self._sign(
            self.client_key, self.client_cert, f"/CN={name}", "extendedKeyUsage=clientAuth\n"
        )


def _new_key(path: Path) -> None:
    _openssl(
        "genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{KEY_BITS}", "-out", path
    )
    path.chmod(0o600)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _openssl(*args: str | Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise StackError("openssl is needed for the secured local Kafka: apt-get install openssl")
    result = subprocess.run(
        [openssl, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=OPENSSL_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def new_password() -> str:
    return secrets.token_urlsafe(24)


def write_secret_file(path: Path, value: str) -> Path:
    """Write a password file readable by its owner only; return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_private(path, value + "\n")
    return path

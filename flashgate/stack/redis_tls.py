"""Certificates for a local Redis over TLS: a CA, a server certificate for 127.0.0.1,
and a client certificate (Redis asks clients for one by default), made with openssl.

For the local stack and tests only: production brings its own CA.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from flashgate.errors import StackError

DAYS = 3650


@dataclass(frozen=True)
class RedisTlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server_args(self, port: int) -> list[str]:
        """redis-server options: TLS only on `port`, plaintext off."""
        return [
            "--port", "0",
            "--tls-port", str(port),
            "--tls-cert-file", str(self.server_cert),
            "--tls-key-file", str(self.server_key),
            "--tls-ca-cert-file", str(self.ca),
            "--tls-cluster", "yes",
            "--tls-replication", "yes",
        ]  # fmt: skip

    @property
    def cli_args(self) -> list[str]:
        """redis-cli options to reach a node of this CA."""
        return [
            "--tls", "--cacert", str(self.ca),
            "--cert", str(self.client_cert), "--key", str(self.client_key),
        ]  # fmt: skip

    def client_env(self) -> dict[str, str]:
        """FLASHGATE_REDIS_* settings for a client of these certificates."""
        return {
            "FLASHGATE_REDIS_SSL_CA_FILE": str(self.ca),
            "FLASHGATE_REDIS_SSL_CERT_FILE": str(self.client_cert),
            "FLASHGATE_REDIS_SSL_KEY_FILE": str(self.client_key),
        }


def ensure_tls_files(directory: Path, name: str = "redis") -> RedisTlsFiles:
    """Create the CA and certificates in `directory` unless they are there already.

    `name` prefixes the files and the CA's name: the reference backend's TLS mode
    makes its own set the same way (`name="backend"`).
    """
    files = RedisTlsFiles(
        ca=directory / f"{name}-ca.crt",
        server_cert=directory / f"{name}-server.crt",
        server_key=directory / f"{name}-server.key",
        client_cert=directory / f"{name}-client.crt",
        client_key=directory / f"{name}-client.key",
    )
    if all(path.exists() for path in files.__dict__.values()):
        return files
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = directory / f"{name}-ca.key"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", str(DAYS),
             "-subj", f"/CN=flashgate local {name} CA", "-keyout", str(ca_key),
             "-out", str(files.ca))  # fmt: skip
    _signed(directory, f"{name}-server", ca_key, files.ca, "subjectAltName=IP:127.0.0.1")
    _signed(directory, f"{name}-client", ca_key, files.ca, "extendedKeyUsage=clientAuth")
    for key in (ca_key, files.server_key, files.client_key):
        key.chmod(0o600)
    return files


def _signed(directory: Path, name: str, ca_key: Path, ca: Path, extension: str) -> None:
    key, request, cert = (directory / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
    extensions = directory / f"{name}.ext"
    extensions.write_text(extension + "\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
             "-keyout", str(key), "-out", str(request))  # fmt: skip
    _openssl("x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key),
             "-CAcreateserial", "-days", str(DAYS), "-extfile", str(extensions),
             "-out", str(cert))  # fmt: skip
    request.unlink()
    extensions.unlink()


def _openssl(*args: str) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise StackError(
            "openssl is needed to make Redis TLS certificates (apt-get install openssl)"
        )
    done = subprocess.run([binary, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise StackError(f"openssl {args[0]} failed: {done.stderr.strip()}")

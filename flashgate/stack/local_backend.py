"""The reference backend of `flashgate up` in each mode a real order service has.

`stack.backend_mode` (FLASHGATE_STACK_BACKEND_MODE), what the backend does and what
the consumer is given to match:
- `plain`: plain HTTP, no credentials;
- `bearer`: wants the token in `<state>/backend-auth/token`; the drain gets
  `backend_auth = "bearer"` with that file;
- `oauth2`: serves `/oauth/token` to client `flashgate` (ID:SECRET in
  `<state>/backend-auth/oauth2-client`), tokens living 60 s; the drain gets
  `backend_auth = "oauth2"` with the token URL, the client and a secret file;
- `tls`: HTTPS only, with a certificate of a CA made in `<state>/backend-tls/`; the
  drain gets the `https://` URL and the CA;
- `refuse-401`, `refuse-403`, `refuse-404`: that status to every order for its first
  60 s (watch the drain hold and resume);
- `reject`: 422 to orders whose attributes carry `reject` (those are dead-lettered).

Secrets are made once (0600) and passed to both sides as files, never on a command line.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from flashgate.stack.redis_tls import ensure_tls_files

OAUTH2_CLIENT_ID = "flashgate"
OAUTH2_TOKEN_TTL_S = 60
REFUSE_SECONDS = 60
REJECT_ATTRIBUTE = "reject"


@dataclass(frozen=True)
class BackendMode:
    """Extra flags of the reference backend, and FLASHGATE_DRAIN_* for the consumer."""

    args: list[str] = field(default_factory=list)
    drain_env: dict[str, str] = field(default_factory=dict)
    scheme: str = "http"


def backend_mode(mode: str, state: Path, host: str, port: int) -> BackendMode:
    if mode == "plain":
        return BackendMode()
    if mode == "bearer":
        token = _secret_file(state / "backend-auth" / "token", secrets.token_urlsafe(32))
        return BackendMode(
            ["--require-token-file", str(token)],
            {"FLASHGATE_DRAIN_BACKEND_AUTH": "bearer",
             "FLASHGATE_DRAIN_BACKEND_TOKEN_FILE": str(token)},
        )  # fmt: skip
    if mode == "oauth2":
        secret = secrets.token_urlsafe(32)
        client = _secret_file(
            state / "backend-auth" / "oauth2-client", f"{OAUTH2_CLIENT_ID}:{secret}"
        )
        secret_file = _secret_file(
            state / "backend-auth" / "oauth2-secret",
            client.read_text().strip().partition(":")[2],
        )
        return BackendMode(
            ["--oauth2-client-file", str(client), "--token-ttl", str(OAUTH2_TOKEN_TTL_S)],
            {
                "FLASHGATE_DRAIN_BACKEND_AUTH": "oauth2",
                "FLASHGATE_DRAIN_BACKEND_OAUTH2_TOKEN_URL": f"http://{host}:{port}/oauth/token",
                "FLASHGATE_DRAIN_BACKEND_OAUTH2_CLIENT_ID": OAUTH2_CLIENT_ID,
                "FLASHGATE_DRAIN_BACKEND_OAUTH2_CLIENT_SECRET_FILE": str(secret_file),
            },
        )
    if mode == "tls":
        tls = ensure_tls_files(state / "backend-tls", name="backend")
        return BackendMode(
            ["--tls-cert", str(tls.server_cert), "--tls-key", str(tls.server_key)],
            {
                "FLASHGATE_DRAIN_BACKEND_URL": f"https://{host}:{port}/orders",
                "FLASHGATE_DRAIN_BACKEND_CA_FILE": str(tls.ca),
            },
            scheme="https",
        )
    if mode.startswith("refuse-"):
        status = mode.removeprefix("refuse-")
        return BackendMode(["--refuse-status", status, "--refuse-seconds", str(REFUSE_SECONDS)])
    if mode == "reject":
        return BackendMode(["--reject-attribute", REJECT_ATTRIBUTE])
    raise ValueError(f"unknown backend mode {mode!r}")


def _secret_file(path: Path, value: str) -> Path:
    """`path`, written with `value` (0600) unless it exists already."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        path.touch(mode=0o600)
        path.write_text(value + "\n")
    return path

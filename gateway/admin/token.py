"""The admin token: `FLASHGATE_ADMIN_TOKEN` (settings.admin.token), else a generated one
kept in `<state_dir>/admin-token` with mode 600.

The file is created atomically (written to a private temporary file, then
hard-linked into place), so two processes starting together agree on one token
and nobody ever reads a half-written file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from flashgate.settings import Settings

TOKEN_FILE = "admin-token"
TOKEN_BYTES = 32


def token_path(settings: Settings) -> Path:
    return settings.state_dir / TOKEN_FILE


def ensure_admin_token(settings: Settings) -> str:
    if settings.admin.token:
        return settings.admin.token
    path = token_path(settings)
    existing = _read(path)
    if existing:
        return existing
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{TOKEN_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(TOKEN_BYTES) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        # If another process won the race, its token is the one.
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    token = _read(path)
    if not token:
        raise RuntimeError(f"{path} is empty")
    return token


def _read(path: Path) -> str | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    if text and path.stat().st_mode & 0o077:
        path.chmod(0o600)  # someone loosened it: a token is a password
    return text or None

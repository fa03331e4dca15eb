"""One audit log line per admin change: who (peer address), what, and the new state."""

from __future__ import annotations

import logging

from starlette.requests import Request

audit_log = logging.getLogger("flashgate.audit")


def audit(request: Request, action: str, detail: str) -> None:
    client = request.client
    peer = f"{client.host}:{client.port}" if client else "unknown"
    audit_log.info("admin change by %s: %s %s", peer, action, detail)

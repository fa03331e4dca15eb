"""Refuse at start a `[drain]` backend connection that cannot work, naming the setting.

msgspec turns the ValueError raised here into a settings error naming `[drain]`;
files (CA, certificate, token) are read when the consumer builds its client, so
a missing one stops the consumer at start, with its path.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from flashgate.settings import DrainSettings

# Headers the drain sets itself: the order's identity and body, and the credentials.
RESERVED_HEADERS = frozenset({"idempotency-key", "content-type", "content-length", "host"})
ENV_REFERENCE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def check_backend_settings(drain: DrainSettings) -> None:
    url = urlsplit(drain.backend_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError("drain.backend_url must be an http:// or https:// URL")
    if bool(drain.backend_client_cert) != bool(drain.backend_client_key):
        raise ValueError("drain.backend_client_cert and drain.backend_client_key go together")
    if url.scheme == "http" and (drain.backend_ca_file or drain.backend_client_cert):
        raise ValueError("drain.backend_ca_file and backend_client_cert need an https:// URL")
    for name in drain.backend_headers:
        lowered = name.lower()
        if lowered in RESERVED_HEADERS or (
            lowered == "authorization" and drain.backend_auth != "none"
        ):
            raise ValueError(f"drain.backend_headers: {name} is set by the drain itself")
    if drain.backend_auth == "bearer":
        if bool(drain.backend_token) == bool(drain.backend_token_file):
            raise ValueError(
                "drain.backend_auth = bearer needs one of backend_token "
                "(FLASHGATE_DRAIN_BACKEND_TOKEN) or backend_token_file"
            )
    elif drain.backend_token or drain.backend_token_file:
        raise ValueError("drain.backend_token is used only with backend_auth = bearer")
    oauth2 = (
        drain.backend_oauth2_token_url,
        drain.backend_oauth2_client_id,
        drain.backend_oauth2_client_secret,
        drain.backend_oauth2_client_secret_file,
        drain.backend_oauth2_scope,
    )
    if drain.backend_auth == "oauth2":
        token_url = urlsplit(drain.backend_oauth2_token_url)
        if token_url.scheme not in ("http", "https") or not token_url.hostname:
            raise ValueError("drain.backend_oauth2_token_url must be an http(s):// URL")
        if not drain.backend_oauth2_client_id:
            raise ValueError("drain.backend_auth = oauth2 needs backend_oauth2_client_id")
        if bool(drain.backend_oauth2_client_secret) == bool(
            drain.backend_oauth2_client_secret_file
        ):
            raise ValueError(
                "drain.backend_auth = oauth2 needs one of backend_oauth2_client_secret "
                "(FLASHGATE_DRAIN_BACKEND_OAUTH2_CLIENT_SECRET) or "
                "backend_oauth2_client_secret_file"
            )
    elif any(oauth2):
        raise ValueError("drain.backend_oauth2_* are used only with backend_auth = oauth2")
    if drain.refusal_storm_orders < 1 or drain.refusal_storm_window_s <= 0:
        raise ValueError("drain.refusal_storm_orders must be >= 1 and refusal_storm_window_s > 0")

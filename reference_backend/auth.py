"""What real order services ask of a caller: a bearer token, or an OAuth2 client-credentials token.

- `--require-token T`: every order request must carry `Authorization: Bearer T`;
- `--oauth2-client ID:SECRET`: `POST /oauth/token` (grant `client_credentials`,
  the client in HTTP Basic or in the form) issues random tokens living
  `--token-ttl` seconds, and order requests must carry one that is still alive.

A missing, wrong or expired token is answered 401 with `WWW-Authenticate`, as
RFC 6750 says; only the order routes are guarded (stats and admin stay open to
the tests and the demo).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import time
from collections.abc import Callable
from urllib.parse import unquote_plus

from aiohttp import web

MAX_TOKENS = 10_000


class TokenCheck:
    """Decides whether an order request's `Authorization` header is good enough."""

    def __init__(
        self,
        *,
        static_token: str = "",
        client: tuple[str, str] | None = None,
        token_ttl_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._static = static_token
        self._client = client
        self._ttl = token_ttl_s
        self._clock = clock
        self._issued: dict[str, float] = {}
        self.issued_total = 0

    @property
    def enabled(self) -> bool:
        return bool(self._static) or self._client is not None

    def refusal(self, request: web.Request) -> web.Response | None:
        """None when the request may pass; else the 401 to answer."""
        if not self.enabled:
            return None
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return _unauthorized("invalid_request", "a bearer token is required")
        if self._static and hmac.compare_digest(token, self._static):
            return None
        expires = self._issued.get(token)
        if expires is None:
            return _unauthorized("invalid_token", "unknown token")
        if self._clock() >= expires:
            return _unauthorized("invalid_token", "token expired")
        return None

    async def token_endpoint(self, request: web.Request) -> web.Response:
        if self._client is None:
            return web.json_response({"error": "no OAuth2 client configured"}, status=404)
        form = {k: str(v) for k, v in (await request.post()).items()}
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        client_id, secret = _basic(request.headers.get("Authorization", ""))
        if client_id is None:
            client_id, secret = form.get("client_id"), form.get("client_secret")
        want_id, want_secret = self._client
        if not (
            client_id is not None
            and secret is not None
            and hmac.compare_digest(client_id, want_id)
            and hmac.compare_digest(secret, want_secret)
        ):
            return web.json_response(
                {"error": "invalid_client"},
                status=401,
                headers={"WWW-Authenticate": 'Basic realm="token"'},
            )
        self._forget_expired()
        token = secrets.token_urlsafe(24)
        self._issued[token] = self._clock() + self._ttl
        self.issued_total += 1
        return web.json_response(
            {"access_token": token, "token_type": "Bearer", "expires_in": self._ttl},
            headers={"Cache-Control": "no-store"},
        )

    def _forget_expired(self) -> None:
        if len(self._issued) >= MAX_TOKENS:
            now = self._clock()
            self._issued = {t: e for t, e in self._issued.items() if e > now}


def _basic(header: str) -> tuple[str | None, str | None]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    # RFC 6749 2.3.1: an OAuth2 client's id and secret are form-encoded inside Basic.
    return (unquote_plus(user), unquote_plus(password)) if sep else (None, None)


def _unauthorized(error: str, description: str) -> web.Response:
    return web.json_response(
        {"error": error, "error_description": description},
        status=401,
        headers={"WWW-Authenticate": f'Bearer error="{error}"'},
    )

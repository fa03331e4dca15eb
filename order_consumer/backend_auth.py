"""The `Authorization` header of each POST to the backend: none, a bearer token, or OAuth2.

- `BearerToken`: a fixed token (FLASHGATE_DRAIN_BACKEND_TOKEN), or one read from
  a file (a mounted secret) and read again when the file changes, so a rotated
  token reaches the next order without a restart;
- `OAuth2ClientCredentials`: a token from the token endpoint (client-credentials
  grant, client authenticated with HTTP Basic as RFC 6749 2.3.1 asks), cached and
  fetched again before it expires; concurrent deliveries wait for one fetch.

After a 401 the client asks `renew(used)`: True when another credential is
available now (the file changed, a fresh token was fetched), for one retry.
Tokens and secrets are `Secret`s or local strings: never logged, never in an error.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol
from urllib.parse import quote_plus

import aiohttp
import msgspec

from flashgate.errors import ConfigError
from flashgate.secret import Secret
from flashgate.settings import DrainSettings
from order_consumer.errors import BackendRefuses, BackendUnavailable

log = logging.getLogger(__name__)

FILE_CHECK_S = 1.0
# A token is fetched again once this share of its life is gone (at most 60 s before).
REFRESH_SHARE = 0.2
REFRESH_MARGIN_MAX_S = 60.0
DEFAULT_TOKEN_LIFE_S = 300.0
TOKEN_ANSWER_MAX_BYTES = 64 * 1024


class Credentials(Protocol):
    async def authorization(self, session: aiohttp.ClientSession) -> str | None:
        """The `Authorization` header value for the next request, None for none."""

    async def renew(self, session: aiohttp.ClientSession, used: str | None) -> bool:
        """After a 401 to `used`: True if another credential is ready for one retry."""


class NoCredentials:
    async def authorization(self, session: aiohttp.ClientSession) -> str | None:
        return None

    async def renew(self, session: aiohttp.ClientSession, used: str | None) -> bool:
        return False


def read_secret_file(path: str) -> str:
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    if not value:
        raise ConfigError(f"{path} is empty")
    return value


class BearerToken:
    def __init__(
        self, token: Secret, path: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._path = path
        self._clock = clock
        self._token = token.reveal()
        self._stamp: tuple[float, int] | None = None
        self._checked_at = float("-inf")
        if path:
            self._reload(force=True)

    async def authorization(self, session: aiohttp.ClientSession) -> str | None:
        if self._path and self._clock() - self._checked_at >= FILE_CHECK_S:
            self._reload(force=False)
        return f"Bearer {self._token}"

    async def renew(self, session: aiohttp.ClientSession, used: str | None) -> bool:
        if not self._path:
            return False
        self._reload(force=False)
        return f"Bearer {self._token}" != used

    def _reload(self, *, force: bool) -> None:
        self._checked_at = self._clock()
        try:
            stat = os.stat(self._path)
        except OSError as exc:
            if force:
                raise ConfigError(f"cannot read {self._path}: {exc.strerror}") from exc
            log.warning("backend token file %s unreadable (%s): keeping the last token",
                        self._path, exc.strerror)  # fmt: skip
            return
        stamp = (stat.st_mtime, stat.st_size)
        if stamp == self._stamp and not force:
            return
        try:
            token = read_secret_file(self._path)
        except ConfigError:
            if force:
                raise
            log.warning("backend token file %s unreadable or empty: keeping the last token",
                        self._path)  # fmt: skip
            return
        if self._stamp is not None and token != self._token:
            log.info("backend token file %s changed: using the new token", self._path)
        self._token, self._stamp = token, stamp


class _TokenAnswer(msgspec.Struct):
    access_token: str
    expires_in: float | None = None
    token_type: str = "Bearer"


class OAuth2ClientCredentials:
    def __init__(
        self,
        token_url: str,
        client_id: str,
        secret: Secret,
        secret_file: str,
        scope: str,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._token_url = token_url
        self._client_id = client_id
        self._secret = secret.reveal()
        self._secret_file = secret_file
        self._scope = scope
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._clock = clock
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()
        if secret_file:
            read_secret_file(secret_file)  # a missing file stops the start, not the first order

    async def authorization(self, session: aiohttp.ClientSession) -> str | None:
        if self._token is None or self._clock() >= self._refresh_at:
            await self._fetch(session, stale=self._token)
        return f"Bearer {self._token}"

    async def renew(self, session: aiohttp.ClientSession, used: str | None) -> bool:
        await self._fetch(session, stale=used.removeprefix("Bearer ") if used else None)
        return True

    async def _fetch(self, session: aiohttp.ClientSession, stale: str | None) -> None:
        async with self._lock:
            # Another delivery fetched a fresh token while this one waited for the lock.
            fresh = self._token is not None and self._clock() < self._refresh_at
            if fresh and self._token != stale:
                return
            secret = read_secret_file(self._secret_file) if self._secret_file else self._secret
            form = {"grant_type": "client_credentials"}
            if self._scope:
                form["scope"] = self._scope
            started = self._clock()
            try:
                async with session.post(
                    self._token_url,
                    data=form,
                    timeout=self._timeout,
                    headers={
                        "Accept": "application/json",
                        "Authorization": client_authorization(self._client_id, secret),
                    },
                ) as response:
                    raw = await response.content.read(TOKEN_ANSWER_MAX_BYTES)
                    status = response.status
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise BackendUnavailable(f"token endpoint unreachable: {exc!r}") from exc
            text = raw[:200].decode(errors="replace")
            if status >= 500 or status in (408, 429):
                raise BackendUnavailable(f"token endpoint answered {status}: {text}", None, status)
            if status >= 300:
                # Wrong client, secret, scope or URL: no order can go until that is fixed.
                raise BackendRefuses(status, f"token endpoint: {text}")
            try:
                answer = msgspec.json.decode(raw, type=_TokenAnswer)
            except msgspec.DecodeError as exc:
                missing = "token endpoint answered without access_token"
                raise BackendRefuses(status, missing) from exc
            life = answer.expires_in if answer.expires_in and answer.expires_in > 0 else None
            life = life or DEFAULT_TOKEN_LIFE_S
            self._token = answer.access_token
            self._refresh_at = started + life - min(REFRESH_MARGIN_MAX_S, life * REFRESH_SHARE)
            log.info("backend OAuth2 token fetched, valid %.0f s", life)


def client_authorization(client_id: str, secret: str) -> str:
    """HTTP Basic for an OAuth2 client: both parts form-encoded first (RFC 6749 2.3.1)."""
    pair = f"{quote_plus(client_id)}:{quote_plus(secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def credentials_for(drain: DrainSettings) -> Credentials:
    """The credentials `[drain] backend_auth` asks for; a secret file that cannot be read
    stops the start (ConfigError naming it)."""
    if drain.backend_auth == "bearer":
        return BearerToken(drain.backend_token, drain.backend_token_file)
    if drain.backend_auth == "oauth2":
        return OAuth2ClientCredentials(
            drain.backend_oauth2_token_url,
            drain.backend_oauth2_client_id,
            drain.backend_oauth2_client_secret,
            drain.backend_oauth2_client_secret_file,
            drain.backend_oauth2_scope,
            drain.backend_timeout_s,
        )
    return NoCredentials()

"""POST one order to the backend with `Idempotency-Key: <order_id>` and classify the answer.

The endpoint, TLS (CA, client certificate), extra headers and credentials come
from `[drain]` (`connection_for`). What an answer means:
- 2xx (including the backend's "duplicate" answer): delivered;
- 408, 425, 429, 5xx, timeouts and connection errors: transient (`BackendUnavailable`);
- 401, 403, 404, 405, 407, 410, 415, 426: the backend refuses every order
  (`BackendRefuses`); a 401 first gets one retry with renewed credentials;
- any other 4xx (400, 409, 422...): this order is refused (`OrderRejected`);
- a TLS handshake that fails on certificates: refused too, with status 0.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp

from flashgate.drain.backend_settings import ENV_REFERENCE
from flashgate.errors import ConfigError
from flashgate.settings import DrainSettings
from order_consumer.backend_auth import Credentials, NoCredentials, credentials_for
from order_consumer.errors import BackendRefuses, BackendUnavailable, OrderRejected
from order_consumer.refusals import REFUSING_STATUSES

TRANSIENT_STATUSES = frozenset({408, 425, 429})
MESSAGE_MAX_CHARS = 200
TLS_REFUSAL = 0
"""The status of a refusal heard in the TLS handshake, before any HTTP answer."""


@dataclass(frozen=True)
class Connection:
    """Where and how orders are POSTed."""

    url: str
    ssl_context: ssl.SSLContext | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    credentials: Credentials = field(default_factory=NoCredentials)


def connection_for(drain: DrainSettings, environ: Mapping[str, str] | None = None) -> Connection:
    """Build the connection `[drain]` describes; a file or variable it names that is
    missing stops the start with a ConfigError naming it (never its value)."""
    return Connection(
        url=drain.backend_endpoint,
        ssl_context=tls_context(drain),
        headers=resolve_headers(drain.backend_headers, os.environ if environ is None else environ),
        credentials=credentials_for(drain),
    )


def shown_url(url: str) -> str:
    """`url` fit for a log line: a user and password in it are left out."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def tls_context(drain: DrainSettings) -> ssl.SSLContext | None:
    if not drain.backend_ca_file and not drain.backend_client_cert:
        return None  # aiohttp's default: the system's trust store, for https
    try:
        context = ssl.create_default_context(cafile=drain.backend_ca_file or None)
        if drain.backend_client_cert:
            context.load_cert_chain(drain.backend_client_cert, drain.backend_client_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"drain backend TLS files cannot be loaded: {exc}") from exc
    return context


def resolve_headers(headers: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    resolved = {}
    for name, value in headers.items():
        reference = ENV_REFERENCE.match(value)
        if reference is not None:
            variable = reference.group(1)
            if variable not in environ:
                raise ConfigError(f"drain.backend_headers.{name}: ${{{variable}}} is not set")
            value = environ[variable]
        resolved[name] = value
    return resolved


class BackendClient:
    """Kept-alive connections to the backend, at most `concurrency` at a time."""

    def __init__(self, connection: Connection, concurrency: int, timeout_s: float) -> None:
        self._connection = connection
        self._url = connection.url
        self._concurrency = concurrency
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> BackendClient:
        connector = aiohttp.TCPConnector(
            limit=self._concurrency,
            keepalive_timeout=30,
            ssl=self._connection.ssl_context or True,
        )
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def deliver(self, order_id: str, body: bytes) -> None:
        """Return when the backend has the order; raise a `DeliveryError` otherwise."""
        session = self._session
        if session is None:
            raise RuntimeError("BackendClient used outside `async with`")
        credentials = self._connection.credentials
        try:
            authorization = await credentials.authorization(session)
            status, answer = await self._post(session, order_id, body, authorization)
            if status == 401 and await credentials.renew(session, authorization):
                authorization = await credentials.authorization(session)
                status, answer = await self._post(session, order_id, body, authorization)
        except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError) as exc:
            # An untrusted certificate (wrong CA, wrong host) or a refused client
            # certificate does not heal by retrying: as a refusal, with no HTTP status.
            raise BackendRefuses(TLS_REFUSAL, f"TLS: {exc}") from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise BackendUnavailable(f"backend unreachable: {exc!r}") from exc
        if 200 <= status < 300:
            return
        text, retry_after = answer
        if status in TRANSIENT_STATUSES or status >= 500:
            raise BackendUnavailable(f"backend answered {status}: {text}", retry_after, status)
        if status in REFUSING_STATUSES:
            raise BackendRefuses(status, text)
        raise OrderRejected(status, text)

    async def _post(
        self,
        session: aiohttp.ClientSession,
        order_id: str,
        body: bytes,
        authorization: str | None,
    ) -> tuple[int, tuple[str, float | None]]:
        headers = dict(self._connection.headers)
        headers["Idempotency-Key"] = order_id
        headers["Content-Type"] = "application/json"
        if authorization is not None:
            headers["Authorization"] = authorization
        async with session.post(self._url, data=body, headers=headers) as response:
            if 200 <= response.status < 300:
                await response.read()
                return response.status, ("", None)
            text = (await response.text(errors="replace"))[:MESSAGE_MAX_CHARS]
            return response.status, (text, _retry_after(response.headers.get("Retry-After")))


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None

"""Create the asyncio Redis client from the settings: one factory for every process.

`[redis] mode` picks the client: a plain `Redis` (standalone), redis-py's
`RedisCluster` (slot routing, MOVED/ASK redirects, pipelines split per node) or
a `Redis` whose pool asks Sentinel for the current primary. `rediss://` and the
`ssl_*` files add TLS to each. Passwords stay inside the client: what is logged
or shown goes through `describe()`.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import (
    ClusterDownError,
    RedisClusterException,
    RedisError,
    SlotNotCoveredError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from flashgate.redis_cluster_client import FailoverSafeCluster
from flashgate.settings import RedisSettings

# What the rest of flashgate holds: either client answers the same commands, and a
# script call or pipeline is routed by its keys' hash tag in cluster mode.
RedisClient = Redis | RedisCluster

# Every failure either client raises. redis-py's cluster errors that are not about
# one command (no node reachable, slots not covered during a failover) derive from
# RedisClusterException, not RedisError: callers that answer 503 catch both.
RedisFailure = (RedisError, RedisClusterException)
# redis-py on uvloop can raise RuntimeError ("... the handler is closed") when it reopens
# a connection on a transport a failover has just closed (seen under Sentinel: the
# consumer's progress loop died of it mid-failover). A lost connection in all but name:
# the drain's background loops, which must outlive a failover, take it as one.
RedisFailureInLoop = (*RedisFailure, RuntimeError)

# Short timeouts: a request must fail fast when Redis is gone, not hang.
SOCKET_TIMEOUT_S = 2.0
CONNECT_TIMEOUT_S = 2.0
HEALTH_CHECK_INTERVAL_S = 30
MAX_CONNECTIONS = 256
# Errors after which a cluster client must ask the cluster for its slots again:
# the node it knew for a slot is gone or no longer serves it (a failover).
_TOPOLOGY_ERRORS = (RedisConnectionError, RedisTimeoutError, ClusterDownError, SlotNotCoveredError)


def create_redis(settings: RedisSettings, *, retries: bool = True) -> RedisClient:
    """The client for `settings.mode`.

    `retries=False` for the gateway: a retried admission or confirm after a
    timeout could apply twice, so a failed call is a 503 and the storefront
    retries instead. MOVED and ASK redirects are followed either way (the
    command did not run where it was refused).
    """
    options = _options(settings, retries)
    if settings.mode == "cluster":
        return FailoverSafeCluster.from_url(settings.url, **options)
    if settings.mode == "sentinel":
        return _sentinel_primary(settings, options)
    return Redis.from_url(settings.url, max_connections=MAX_CONNECTIONS, **options)


def _options(settings: RedisSettings, retries: bool) -> dict[str, Any]:
    options: dict[str, Any] = {
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
    }
    if not retries:
        options["retry"] = Retry(NoBackoff(), 0)
    if settings.mode == "cluster":
        # Per node. A slot without a primary (failover in progress) fails only the
        # calls for that slot; the other primaries keep serving their sales.
        options["max_connections"] = MAX_CONNECTIONS
        options["require_full_coverage"] = False
        # Follow each MOVED by moving that one slot, never by a full reset that would
        # disconnect calls in flight (redis-py resets on every 5th MOVED by default).
        options["reinitialize_steps"] = 0
    return options | _tls_options(settings)


def _tls_options(settings: RedisSettings) -> dict[str, Any]:
    if not settings.tls:
        return {}
    # Verify the server against the CA given (else the system's), hostname included.
    options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    if settings.ssl_ca_file:
        options["ssl_ca_certs"] = settings.ssl_ca_file
    if settings.ssl_cert_file:
        options["ssl_certfile"] = settings.ssl_cert_file
        options["ssl_keyfile"] = settings.ssl_key_file
    return options


def _sentinel_primary(settings: RedisSettings, options: dict[str, Any]) -> Redis:
    parts = urlsplit(settings.url)
    tls = _tls_options(settings)
    connection: dict[str, Any] = {
        **options,
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "db": int(parts.path.strip("/") or 0),
    }
    if tls:
        connection["ssl"] = True
    # Sentinels are reached like the data nodes (same TLS), without the data ACL user.
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        **({"ssl": True, **tls} if tls else {}),
    }
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        [_host_port(address) for address in settings.sentinels],
        sentinel_kwargs=sentinel_kwargs,
        **connection,
    )
    client: Redis = sentinel.master_for(
        settings.sentinel_master, redis_class=Redis, max_connections=MAX_CONNECTIONS
    )
    return client


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def forget_topology(client: RedisClient, error: BaseException) -> None:
    """After `error`, make a cluster client rediscover its slots on its next call.

    redis-py does this itself for single commands, but not for a pipeline run
    without retries (the gateway's): without it every later pipeline would go to
    the dead primary again. Only the flag redis-py itself sets is set: closing the
    client instead would cut the connections of concurrent calls mid-handshake.
    """
    if isinstance(client, RedisCluster) and isinstance(error, _TOPOLOGY_ERRORS):
        client._initialize = True


def redacted_url(url: str) -> str:
    """`url` without its password, for logs and answers."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def describe(settings: RedisSettings) -> str:
    """One line naming where Redis is, with no secret in it."""
    if settings.mode == "sentinel":
        where = f"sentinel {settings.sentinel_master} via {','.join(settings.sentinels)}"
    else:
        where = f"{settings.mode} {redacted_url(settings.url)}"
    tls = " (TLS)" if settings.tls else ""
    wait = f", WAIT {settings.wait_replicas}" if settings.wait_replicas else ""
    return f"Redis {where}{tls}{wait}"


def as_text(value: bytes | str) -> str:
    """A Redis reply as text, whether or not the client decodes responses."""
    return value.decode() if isinstance(value, bytes) else value

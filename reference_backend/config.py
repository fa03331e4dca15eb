"""Settings of one reference backend process: listen address, storage, capacity and faults."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8090
DEFAULT_DB_PATH = Path(".flashgate/backend/orders.sqlite3")
DEFAULT_MAX_WAIT = 1.0


def default_burst(rate: float) -> float:
    """Bucket size used when no burst is given: a tenth of a second of rate, at least one."""
    return max(1.0, rate / 10.0)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _finite_non_negative(name: str, value: float) -> None:
    _check(math.isfinite(value) and value >= 0, f"{name} must be a finite number >= 0")


@dataclass(frozen=True, slots=True)
class BackendConfig:
    """Every command-line flag of the reference backend, validated on construction."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    db_path: Path = DEFAULT_DB_PATH
    rate: float = 0.0
    """Orders per second the token bucket admits; 0 means unlimited."""
    burst: float | None = None
    """Token bucket size; None means ``default_burst(rate)``."""
    concurrency: int = 0
    """Most POST /orders processed at once; 0 means unlimited."""
    max_wait: float = DEFAULT_MAX_WAIT
    """Longest a POST waits for capacity before it is refused with 503."""
    error_share: float = 0.0
    """Share (0..1) of POST /orders answered 500 without storing."""
    latency_ms: float = 0.0
    """Latency added to every POST /orders."""
    outage_start: float = 0.0
    """Seconds after start when the injected outage begins."""
    outage_seconds: float = 0.0
    """Length of the injected outage; 0 means no outage."""
    seed: int | None = None
    """Seed of the random generator behind error_share; None draws a fresh seed."""
    commit_interval_ms: float = 0.0
    """0 commits every write at once; > 0 batches commits on that interval."""
    access_log: bool = False
    refuse_status: int = 0
    """Answer this status to every POST /orders for `refuse_seconds` after start (0 = never)."""
    refuse_seconds: float = 0.0
    reject_attribute: str = ""
    """Answer 422 to an order whose `attributes` carry this key ("" = none)."""
    require_token: str = ""
    """Order requests must carry `Authorization: Bearer <this>` ("" = no check)."""
    oauth2_client: str = ""
    """`ID:SECRET` of the one OAuth2 client `POST /oauth/token` serves ("" = no endpoint)."""
    token_ttl_s: float = 300.0
    """Life of the tokens `/oauth/token` issues."""
    tls_cert: Path | None = None
    """Serve HTTPS with this certificate (PEM) and `tls_key`."""
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    """With TLS: ask every client for a certificate signed by this CA (mutual TLS)."""

    def __post_init__(self) -> None:
        _check(0 <= self.port <= 65535, "port must be in 0..65535")
        _finite_non_negative("rate", self.rate)
        if self.burst is not None:
            _check(math.isfinite(self.burst) and self.burst >= 1, "burst must be >= 1")
        _check(self.concurrency >= 0, "concurrency must be >= 0")
        _finite_non_negative("max_wait", self.max_wait)
        _check(0.0 <= self.error_share <= 1.0, "error_share must be in 0..1")
        _finite_non_negative("latency_ms", self.latency_ms)
        _finite_non_negative("outage_start", self.outage_start)
        _finite_non_negative("outage_seconds", self.outage_seconds)
        _finite_non_negative("commit_interval_ms", self.commit_interval_ms)
        _check(
            self.refuse_status == 0 or 400 <= self.refuse_status <= 599,
            "refuse_status must be 0 or an HTTP error status (400-599)",
        )
        _finite_non_negative("refuse_seconds", self.refuse_seconds)
        _check(
            not self.oauth2_client or ":" in self.oauth2_client,
            "oauth2_client must be ID:SECRET",
        )
        _check(math.isfinite(self.token_ttl_s) and self.token_ttl_s > 0, "token_ttl_s must be > 0")
        _check(
            (self.tls_cert is None) == (self.tls_key is None), "tls_cert and tls_key go together"
        )
        _check(self.tls_client_ca is None or self.tls_cert is not None, "tls_client_ca needs TLS")

    @property
    def oauth2_credentials(self) -> tuple[str, str] | None:
        if not self.oauth2_client:
            return None
        client_id, _, secret = self.oauth2_client.partition(":")
        return client_id, secret

    @property
    def effective_burst(self) -> float:
        """The bucket size in force: ``burst`` or the default derived from ``rate``."""
        return self.burst if self.burst is not None else default_burst(self.rate)

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

    @property
    def effective_burst(self) -> float:
        """The bucket size in force: ``burst`` or the default derived from ``rate``."""
        return self.burst if self.burst is not None else default_burst(self.rate)

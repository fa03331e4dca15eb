"""The adaptive limit: back off when the backend slows down or errs, climb back after (AIMD).

Pure logic on an injected clock. Deliveries report each answer (`record`);
the control loop calls `update(ceiling)` a few times a second and gets the
limit back: None while the backend keeps up (the ceiling alone applies), else
a rate below the ceiling.

- Congestion, in one update interval: any 429 or 503 (the backend says it is
  overloaded), a share of errors (other 5xx, timeouts, connection errors) above
  `error_share`, or a mean latency above `tolerance * baseline + slack`, where
  the baseline is the lowest recent mean and rises only slowly (so a backend that
  became slower for good is accepted after a while, a queue building up is not).
- On congestion the limit is multiplied by `decrease_factor`, at most once per
  `cooldown_s` (one episode is one decrease, not one per failed request), never
  below `floor_per_s`. A `Retry-After` holds every increase until it has passed.
- Without congestion, and with answers to judge by, the limit grows by
  `increase_share_per_s` of the ceiling per second; reaching the ceiling lifts it.

Ops set a ceiling; this finds what the backend takes below it.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass

DECREASE_FACTOR = 0.7
INCREASE_SHARE_PER_S = 0.1
LATENCY_TOLERANCE = 2.0
COOLDOWN_S = 1.0
BASELINE_RISE_S = 30.0
MAX_STEP_S = 2.0


class Outcome(enum.Enum):
    OK = "ok"
    """2xx or a duplicate answer."""
    REJECTED = "rejected"
    """A 4xx other than 408/425/429: the order is bad, the backend is fine."""
    OVERLOADED = "overloaded"
    """429 or 503: the backend asks us to slow down."""
    ERROR = "error"
    """Another 5xx, a timeout or a connection error."""


@dataclass(frozen=True, slots=True)
class AdaptiveConfig:
    floor_per_s: float = 1.0
    error_share: float = 0.1
    latency_slack_s: float = 0.25
    latency_tolerance: float = LATENCY_TOLERANCE
    decrease_factor: float = DECREASE_FACTOR
    increase_share_per_s: float = INCREASE_SHARE_PER_S
    cooldown_s: float = COOLDOWN_S
    baseline_rise_s: float = BASELINE_RISE_S


@dataclass(slots=True)
class _Window:
    answers: int = 0
    errors: int = 0
    overloaded: int = 0
    latency_sum_s: float = 0.0
    latency_count: int = 0
    retry_after_s: float = 0.0


class AdaptiveLimit:
    def __init__(self, config: AdaptiveConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self.limit: float | None = None
        self.baseline_s: float | None = None
        self.last_signal = ""
        """Why the limit last went down (for logs and reports)."""
        self._window = _Window()
        self._updated = clock()
        self._last_decrease = -float("inf")
        self._hold_until = -float("inf")

    def record(
        self, outcome: Outcome, latency_s: float, retry_after_s: float | None = None
    ) -> None:
        """One answer (or failure) of the backend and how long it took."""
        window = self._window
        window.answers += 1
        if outcome is Outcome.OVERLOADED:
            window.overloaded += 1
        elif outcome is Outcome.ERROR:
            window.errors += 1
        else:
            window.latency_sum_s += latency_s
            window.latency_count += 1
        if retry_after_s:
            window.retry_after_s = max(window.retry_after_s, retry_after_s)

    def update(self, ceiling_per_s: float) -> float | None:
        """Judge the answers since the last call; return the limit (None: the ceiling applies)."""
        now = self._clock()
        step = min(MAX_STEP_S, max(0.0, now - self._updated))
        self._updated = now
        window, self._window = self._window, _Window()
        if ceiling_per_s <= 0:
            return self.limit
        if self.limit is not None and self.limit > ceiling_per_s:
            self.limit = ceiling_per_s
        signal = self._congestion(window, step)
        if window.retry_after_s:
            self._hold_until = max(self._hold_until, now + window.retry_after_s)
        if signal:
            if now - self._last_decrease >= self.config.cooldown_s:
                base = ceiling_per_s if self.limit is None else self.limit
                self.limit = max(self.config.floor_per_s, base * self.config.decrease_factor)
                self._last_decrease = now
                self.last_signal = signal
        elif window.answers and self.limit is not None and now >= self._hold_until:
            self.limit += ceiling_per_s * self.config.increase_share_per_s * step
            if self.limit >= ceiling_per_s:
                self.limit = None
        return self.limit

    def _congestion(self, window: _Window, step: float) -> str:
        """Why this window shows congestion, or "" if it does not."""
        if window.overloaded:
            return f"backend overloaded ({window.overloaded} answers 429/503)"
        if window.answers and window.errors / window.answers > self.config.error_share:
            return f"backend errors ({window.errors} of {window.answers} answers)"
        if not window.latency_count:
            return ""
        mean = window.latency_sum_s / window.latency_count
        baseline = self.baseline_s
        if baseline is None or mean <= baseline:
            self.baseline_s = mean
            return ""
        # The baseline follows a lasting rise slowly, a fall at once.
        self.baseline_s = baseline + (mean - baseline) * min(
            1.0, step / self.config.baseline_rise_s
        )
        threshold = baseline * self.config.latency_tolerance + self.config.latency_slack_s
        if mean > threshold:
            return f"backend slow (mean {mean * 1000:.0f} ms > {threshold * 1000:.0f} ms)"
        return ""

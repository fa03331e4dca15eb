"""Failure injection: outage windows, refusal windows (one status to every order), a seeded
share of 500 answers, and added latency."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class Faults:
    """The failure settings in force; outage times are on the injector's clock."""

    error_share: float = 0.0
    latency_ms: float = 0.0
    outage_start: float = 0.0
    outage_end: float = 0.0
    refuse_status: int = 0
    refuse_end: float = 0.0


def _validate(name: str, value: float, upper: float = math.inf) -> float:
    if not math.isfinite(value) or not 0.0 <= value <= upper:
        bound = f"0..{upper:g}" if math.isfinite(upper) else ">= 0"
        raise ValueError(f"{name} must be a finite number, {bound}")
    return float(value)


class FaultInjector:
    """Decides per request whether to fail, how long to stall, and whether an outage is on.

    ``clock`` is monotonic seconds (injectable for tests); the error share draws from
    ``random.Random(seed)``, one draw per decision while the share is strictly between
    0 and 1, so a seeded run fails the same requests every time.
    """

    def __init__(
        self,
        faults: Faults | None = None,
        *,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.faults = faults if faults is not None else Faults()
        _validate("error_share", self.faults.error_share, 1.0)
        _validate("latency_ms", self.faults.latency_ms)
        self._clock = clock
        self._random = random.Random(seed)

    def schedule_outage(self, start_in: float, seconds: float) -> None:
        """Plan an outage of ``seconds`` beginning ``start_in`` seconds from now (0 = none)."""
        _validate("outage start", start_in)
        _validate("outage_seconds", seconds)
        start = self._clock() + start_in
        self.faults.outage_start = start
        self.faults.outage_end = start + seconds

    def start_outage(self, seconds: float) -> None:
        """Begin an outage now lasting ``seconds``; 0 ends any outage at once."""
        self.schedule_outage(0.0, seconds)

    def outage_remaining(self) -> float:
        """Seconds left in the current outage, 0 when there is none."""
        now = self._clock()
        if self.faults.outage_start <= now < self.faults.outage_end:
            return self.faults.outage_end - now
        return 0.0

    def refuse(self, status: int, seconds: float) -> None:
        """Answer `status` to every order for `seconds` from now (0 ends a refusal)."""
        if status != 0 and not 400 <= status <= 599:
            raise ValueError("refuse_status must be 0 or an HTTP error status (400-599)")
        seconds = _validate("refuse_seconds", seconds)
        self.faults.refuse_status = status
        self.faults.refuse_end = self._clock() + seconds if status else 0.0

    def refusing(self) -> int:
        """The status every order gets now, 0 when orders are not refused."""
        if self.faults.refuse_status and self._clock() < self.faults.refuse_end:
            return self.faults.refuse_status
        return 0

    def should_fail(self) -> bool:
        """Whether this request gets an injected 500."""
        share = self.faults.error_share
        if share <= 0.0:
            return False
        if share >= 1.0:
            return True
        return self._random.random() < share

    @property
    def latency_seconds(self) -> float:
        return self.faults.latency_ms / 1000.0

    def update(
        self,
        *,
        error_share: float | None = None,
        latency_ms: float | None = None,
        outage_seconds: float | None = None,
    ) -> None:
        """Change the settings given; all are validated before any is applied."""
        if error_share is not None:
            error_share = _validate("error_share", error_share, 1.0)
        if latency_ms is not None:
            latency_ms = _validate("latency_ms", latency_ms)
        if outage_seconds is not None:
            outage_seconds = _validate("outage_seconds", outage_seconds)
        if error_share is not None:
            self.faults.error_share = error_share
        if latency_ms is not None:
            self.faults.latency_ms = latency_ms
        if outage_seconds is not None:
            self.start_outage(outage_seconds)

    def snapshot(self) -> dict[str, float]:
        """The settings as JSON-ready numbers (outage as seconds remaining)."""
        return {
            "error_share": self.faults.error_share,
            "latency_ms": self.faults.latency_ms,
            "outage_remaining": round(self.outage_remaining(), 3),
            "refuse_status": self.refusing(),
            "refuse_remaining": round(max(0.0, self.faults.refuse_end - self._clock()), 3)
            if self.refusing()
            else 0.0,
        }

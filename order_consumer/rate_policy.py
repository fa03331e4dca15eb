"""The effective drain rate and the reason for it: min(schedule, override, adaptive); paused -> 0.

- `schedule`: the ceiling from `flashgate.toml` (the window in force, else `rate_per_s`),
- `override`: ops' rate from `PUT /admin/v1/drain`; it can lower the ceiling, not
  raise it (to go faster, raise the schedule or `rate_per_s` in the file, live),
- `adaptive`: the backend asked for less (see `adaptive.py`),
- `paused`: ops paused the drain.

The reason names the term that sets the rate; on a tie the one ops chose wins
(override over schedule), and adaptive only when strictly lowest.
"""

from __future__ import annotations

from dataclasses import dataclass

from flashgate.drain.control import DrainOverride
from flashgate.drain.schedule import Ceiling

REASON_SCHEDULE = "schedule"
REASON_OVERRIDE = "override"
REASON_ADAPTIVE = "adaptive"
REASON_PAUSED = "paused"


@dataclass(frozen=True, slots=True)
class RateDecision:
    effective_rate: float
    reason: str
    configured_rate: float
    override_rate: float | None
    adaptive_rate: float | None
    paused: bool
    schedule: str


def ops_ceiling(ceiling: Ceiling, override: DrainOverride) -> tuple[float, str]:
    """The rate ops allow (schedule, lowered by an override) and which of the two set it:
    the ceiling the adaptive limit works under."""
    if override.rate is not None and override.rate <= ceiling.rate_per_s:
        return override.rate, REASON_OVERRIDE
    return ceiling.rate_per_s, REASON_SCHEDULE


def decide(ceiling: Ceiling, override: DrainOverride, adaptive_rate: float | None) -> RateDecision:
    rate, reason = ops_ceiling(ceiling, override)
    if adaptive_rate is not None and adaptive_rate < rate:
        rate, reason = adaptive_rate, REASON_ADAPTIVE
    if override.paused:
        rate, reason = 0.0, REASON_PAUSED
    return RateDecision(
        effective_rate=max(0.0, rate),
        reason=reason,
        configured_rate=ceiling.rate_per_s,
        override_rate=override.rate,
        adaptive_rate=adaptive_rate,
        paused=override.paused,
        schedule=ceiling.description,
    )

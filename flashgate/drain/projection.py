"""The one projection of the backlog: when it empties, when an order admitted now is
delivered, and how much of Kafka's retention is left (`headroom_s`).

Pure arithmetic over what the drain publishes (backlog per partition, the
timestamp of each partition's oldest undelivered record) and what sets its rate
ahead (the schedule's windows in their time zone, ops' override, the pause, the
adaptive limit). `flashgate plan`, `flashgate status`, `GET /admin/v1/drain`, the
ops page, the order status ETA and the gateway's admission guard all call
`project`; no other module does this arithmetic.

The rate ahead is min(schedule ceiling at t, override, adaptive limit), 0 while
paused: the override and the adaptive limit are assumed to stay as they are now
(the adaptive limit only climbs back, so this errs on the late side). Delivery is
first in, first out over the whole group, so the order admitted now is delivered
once the backlog ahead of it is. Beyond `HORIZON_S` of projection (or with a rate
of 0) the answer is "never" (None).

Headroom: an undelivered order is deleted by Kafka once its age passes the
retention. The oldest undelivered order is the first at risk; its projected age
at delivery is its age now plus the wait for its turn (one record per partition
ahead of it at most, so the time to drain the partition count). The newest
order in the backlog is delivered last, when the backlog empties, at an age of
about `empty_in_s`. `headroom_s` = retention minus the larger of the two. While
the projection says "never", the oldest order's wait is unknown: headroom is
retention minus its age now, so it falls by the second.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import msgspec

from flashgate.drain.schedule import Schedule

# Two retention periods of the default 3 days: a drain further out than this is "never".
HORIZON_S = 6 * 24 * 3600.0


class RateInputs(msgspec.Struct, frozen=True, kw_only=True):
    """What sets the drain rate from now on."""

    override_rate: float | None = None
    adaptive_rate: float | None = None
    paused: bool = False


class BacklogState(msgspec.Struct, frozen=True, kw_only=True):
    """The buffer now: undelivered records per partition and, per partition, the
    create time (unix seconds) of the record at the group's committed offset."""

    backlog: Mapping[int, int] = msgspec.field(default_factory=dict)
    oldest_at: Mapping[int, float] = msgspec.field(default_factory=dict)


class Projection(msgspec.Struct, frozen=True, kw_only=True):
    computed_at: float
    backlog: int
    rate_now: float
    # Seconds until the backlog is delivered / until an order admitted now is; None = never.
    empty_in_s: float | None
    admitted_delivered_in_s: float | None
    # Age of the oldest undelivered order now (0 without backlog), and its create time.
    oldest_age_s: float
    oldest_at: float | None
    retention_s: float
    headroom_s: float

    @property
    def never(self) -> bool:
        return self.admitted_delivered_in_s is None


def rate_at(schedule: Schedule, inputs: RateInputs, at: float) -> float:
    """The group's drain rate at unix time `at` (the same terms as the drain's rate policy)."""
    if inputs.paused:
        return 0.0
    rate = schedule.ceiling(at).rate_per_s
    if inputs.override_rate is not None:
        rate = min(rate, inputs.override_rate)
    if inputs.adaptive_rate is not None:
        rate = min(rate, inputs.adaptive_rate)
    return max(0.0, rate)


def drain_seconds(
    records: float, now: float, schedule: Schedule, inputs: RateInputs, horizon_s: float = HORIZON_S
) -> float | None:
    """Seconds from `now` until `records` more orders are delivered; None if not within
    `horizon_s` (paused, a rate of 0, or a schedule too slow)."""
    if records <= 0:
        return 0.0
    if inputs.paused:
        return None
    remaining, at, end = float(records), now, now + horizon_s
    while at < end:
        change = schedule.next_change(at)
        until = end if change is None else min(change, end)
        rate = rate_at(schedule, inputs, at)
        span = until - at
        if rate > 0 and rate * span >= remaining:
            return at + remaining / rate - now
        remaining -= rate * span
        at = until
    return None


def project(
    state: BacklogState,
    schedule: Schedule,
    inputs: RateInputs,
    *,
    retention_s: float,
    now: float,
    horizon_s: float = HORIZON_S,
) -> Projection:
    backlog = sum(max(0, count) for count in state.backlog.values())
    waiting = [p for p, count in state.backlog.items() if count > 0]
    times = [state.oldest_at[p] for p in waiting if p in state.oldest_at]
    oldest_at = min(times) if times else None
    oldest_age = max(0.0, now - oldest_at) if oldest_at is not None else 0.0
    empty_in = drain_seconds(backlog, now, schedule, inputs, horizon_s)
    admitted_in = drain_seconds(backlog + 1, now, schedule, inputs, horizon_s)
    if empty_in is None:
        headroom = retention_s - oldest_age
    else:
        oldest_turn = drain_seconds(len(waiting), now, schedule, inputs, horizon_s) or 0.0
        headroom = retention_s - max(oldest_age + oldest_turn, empty_in)
    return Projection(
        computed_at=now,
        backlog=backlog,
        rate_now=rate_at(schedule, inputs, now),
        empty_in_s=empty_in,
        admitted_delivered_in_s=admitted_in,
        oldest_age_s=oldest_age,
        oldest_at=oldest_at,
        retention_s=retention_s,
        headroom_s=headroom,
    )


def seconds_until_fits(projection: Projection, limit_s: float) -> float | None:
    """How long until an order admitted then would be delivered within `limit_s`, if no
    order were admitted meanwhile (0 if it fits now; None = not within the projection).

    The backlog drains toward the same instant whatever time passes, so the delivery
    of an order admitted `w` seconds from now is `admitted_delivered_in_s - w` away:
    it fits once `w >= admitted_delivered_in_s - limit_s`.
    """
    if projection.admitted_delivered_in_s is None:
        return None
    return max(0.0, projection.admitted_delivered_in_s - limit_s)


def describe_seconds(seconds: float | None) -> str:
    """ "never" for None, else whole seconds (for logs and one-line answers)."""
    if seconds is None or math.isinf(seconds):
        return "never"
    return f"{seconds:.0f}s"

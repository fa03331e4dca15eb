"""`flashgate plan`: how long a burst takes to drain and what Kafka must hold meanwhile.

Pure arithmetic, so ops can answer "does the 3-day buffer hold this sale?" before
it starts. The drain time is the backlog projection's (`flashgate.drain.projection`,
the same arithmetic the gateway's admission guard and `flashgate status` use), at a
flat rate. Kafka's on-disk size per record is the value plus the record and
batch overhead (about 70 bytes uncompressed per record in small batches; less
in big ones), times the replication factor.
"""

from __future__ import annotations

import math

import msgspec

from flashgate.drain.projection import BacklogState, RateInputs, project
from flashgate.drain.schedule import Schedule

RECORD_OVERHEAD_BYTES = 70
DEFAULT_ORDER_BYTES = 300
DEFAULT_RETENTION_S = 3 * 24 * 3600


class Plan(msgspec.Struct, frozen=True):
    burst: int
    rate_per_s: float
    order_bytes: int
    replication: int
    retention_s: int
    drain_seconds: float
    kafka_bytes: int
    kafka_bytes_per_replica: int
    buffer_holds: bool
    headroom: float  # retention / drain time; below 1 the oldest orders expire undelivered


def make_plan(
    burst: int,
    rate_per_s: float | None,
    order_bytes: int = DEFAULT_ORDER_BYTES,
    replication: int = 1,
    retention_s: int = DEFAULT_RETENTION_S,
    compression_ratio: float = 1.0,
    *,
    schedule: Schedule | None = None,
    start: float = 0.0,
) -> Plan:
    """A flat `rate_per_s`, or (rate None) the drain's `schedule` from unix time `start`."""
    if rate_per_s is None and schedule is None:
        raise ValueError("a rate or a schedule is needed")
    if burst < 0 or (rate_per_s is not None and rate_per_s <= 0):
        raise ValueError("burst >= 0 and rate > 0 needed")
    if order_bytes <= 0 or replication < 1:
        raise ValueError("order bytes > 0 and replication >= 1 needed")
    if rate_per_s is not None:
        schedule = Schedule.parse([], "UTC", rate_per_s)
    assert schedule is not None
    # The whole burst waiting at once, its oldest order just accepted.
    projection = project(
        BacklogState(backlog={0: burst}, oldest_at={0: start}),
        schedule,
        RateInputs(),
        retention_s=retention_s,
        now=start,
    )
    drain_seconds = projection.empty_in_s if projection.empty_in_s is not None else math.inf
    if rate_per_s is None:  # the schedule's average over the drain
        rate_per_s = burst / drain_seconds if 0 < drain_seconds < math.inf else 0.0
    per_replica = math.ceil(burst * (order_bytes * compression_ratio + RECORD_OVERHEAD_BYTES))
    return Plan(
        burst=burst,
        rate_per_s=rate_per_s,
        order_bytes=order_bytes,
        replication=replication,
        retention_s=retention_s,
        drain_seconds=drain_seconds,
        kafka_bytes=per_replica * replication,
        kafka_bytes_per_replica=per_replica,
        buffer_holds=projection.headroom_s >= 0,
        headroom=retention_s / drain_seconds if drain_seconds > 0 else math.inf,
    )


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} TiB"


def human_duration(seconds: float) -> str:
    if math.isinf(seconds):
        return "never"
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    if hours or days:
        parts.append(f"{hours}h")
    if minutes or hours or days:
        parts.append(f"{minutes}m")
    parts.append(f"{secs}s")
    return " ".join(parts)

"""Drain progress that consumers publish and the gateway and admin surface read.

Each consumer writes, at least once a second, into one Redis hash per group:
- `p:<partition>` -> `<committed offset>,<end offset>` for the partitions it owns,
- `t:<partition>` -> create time (unix s) of the record at that committed offset: the
  oldest undelivered order of the partition (while it has a backlog),
- `c:<consumer id>` -> its own report (msgspec JSON of `ConsumerReport`).
Readers sum the partitions for the backlog and the fresh consumer reports for
the delivered rate, so any number of consumers can share the hash. When the
backlog empties and how old its orders get is `flashgate.drain.outlook`'s answer.
"""

from __future__ import annotations

import time

import msgspec

from flashgate.drain.keys import progress_key
from flashgate.redis_client import RedisClient, as_text

REPORT_FRESH_S = 5.0
PROGRESS_TTL_S = 24 * 3600


class ConsumerReport(msgspec.Struct, frozen=True):
    consumer_id: str
    configured_rate: float
    override_rate: float | None
    effective_rate: float
    paused: bool
    reason: str
    schedule: str
    delivered_per_second: float
    updated_at: float
    # Added by the drain (issue 4); readers of older reports get the defaults.
    adaptive_rate: float | None = None
    backend: str = "up"
    in_flight: int = 0
    delivered_total: int = 0
    dead_lettered_total: int = 0
    # Records fenced: written after their order was settled "not stored" (never delivered).
    fenced_total: int = 0
    # The schedule the consumer runs (live from its settings file), for the projection.
    windows: list[str] = msgspec.field(default_factory=list)
    timezone: str = "UTC"
    rate_per_s: float | None = None
    # Set while the backend refuses every order (401, 403, 404..., a storm; 0 = TLS):
    # the drain holds, and this says why.
    refusal_status: int | None = None
    refusal: str = ""


class BackendRefusal(msgspec.Struct, frozen=True):
    """The backend refuses every order: its status (0 for a TLS refusal) and its answer."""

    status: int
    message: str
    consumers: int


class DrainProgress(msgspec.Struct, frozen=True):
    configured_rate: float | None
    override_rate: float | None
    effective_rate: float
    paused: bool
    reason: str
    schedule: str | None
    backlog: int
    delivered_per_second: float
    committed: dict[int, int]
    end_offsets: dict[int, int]
    consumers: int
    # Set while any fresh consumer reports that the backend refuses every order.
    backend_refusal: BackendRefusal | None = None
    # Create time of the record at each committed offset (partitions with a backlog).
    oldest_at: dict[int, float] = msgspec.field(default_factory=dict)
    adaptive_rate: float | None = None
    # The newest report's schedule (None: no consumer reporting).
    windows: list[str] | None = None
    timezone: str | None = None
    rate_per_s: float | None = None

    def backlogs(self) -> dict[int, int]:
        return {p: max(0, end - self.committed.get(p, 0)) for p, end in self.end_offsets.items()}


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ConsumerReport)


async def publish(
    redis: RedisClient,
    group_id: str,
    report: ConsumerReport,
    partitions: dict[int, tuple[int, int]],
    oldest: dict[int, float] | None = None,
) -> None:
    """Write one consumer's report, its partitions' (committed, end) offsets and the
    create time of each partition's oldest undelivered record."""
    key = progress_key(group_id)
    mapping: dict[str | bytes, bytes | str] = {f"c:{report.consumer_id}": _encoder.encode(report)}
    for partition, (committed, end) in partitions.items():
        mapping[f"p:{partition}"] = f"{committed},{end}"
    for partition, created in (oldest or {}).items():
        mapping[f"t:{partition}"] = repr(created)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
        pipe.expire(key, PROGRESS_TTL_S)
        await pipe.execute()


async def withdraw(redis: RedisClient, group_id: str, consumer_id: str) -> None:
    """Remove a consumer's report when it stops cleanly."""
    await redis.hdel(progress_key(group_id), f"c:{consumer_id}")


async def read(redis: RedisClient, group_id: str, now: float | None = None) -> DrainProgress | None:
    """The group's progress, or None if no consumer has reported yet."""
    raw = await redis.hgetall(progress_key(group_id))
    if not raw:
        return None
    now = time.time() if now is None else now
    committed: dict[int, int] = {}
    end_offsets: dict[int, int] = {}
    oldest_at: dict[int, float] = {}
    reports: list[ConsumerReport] = []
    for key_raw, value_raw in raw.items():
        key, value = as_text(key_raw), value_raw
        if key.startswith("p:"):
            c, _, e = as_text(value).partition(",")
            committed[int(key[2:])] = int(c)
            end_offsets[int(key[2:])] = int(e)
        elif key.startswith("t:"):
            oldest_at[int(key[2:])] = float(as_text(value))
        elif key.startswith("c:"):
            try:
                report = _decoder.decode(value if isinstance(value, bytes) else value.encode())
            except msgspec.DecodeError:
                continue
            if now - report.updated_at <= REPORT_FRESH_S:
                reports.append(report)
    backlog = sum(max(0, end_offsets[p] - committed.get(p, 0)) for p in end_offsets)
    delivered = sum(r.delivered_per_second for r in reports)
    newest = max(reports, key=lambda r: r.updated_at, default=None)
    effective = newest.effective_rate if newest else 0.0
    return DrainProgress(
        configured_rate=newest.configured_rate if newest else None,
        override_rate=newest.override_rate if newest else None,
        effective_rate=effective,
        paused=newest.paused if newest else False,
        reason=newest.reason if newest else "no consumer running",
        schedule=newest.schedule if newest else None,
        backlog=backlog,
        delivered_per_second=delivered,
        committed=committed,
        end_offsets=end_offsets,
        consumers=len(reports),
        backend_refusal=_refusal(reports),
        oldest_at=oldest_at,
        adaptive_rate=newest.adaptive_rate if newest else None,
        windows=newest.windows if newest else None,
        timezone=newest.timezone if newest else None,
        rate_per_s=newest.rate_per_s if newest else None,
    )


def _refusal(reports: list[ConsumerReport]) -> BackendRefusal | None:
    refusals = [
        (r.updated_at, r.refusal_status, r.refusal) for r in reports if r.refusal_status is not None
    ]
    if not refusals:
        return None
    _, status, message = max(refusals)
    return BackendRefusal(status, message, len(refusals))

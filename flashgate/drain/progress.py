"""Drain progress that consumers publish and the gateway and admin surface read.

Each consumer writes, at least once a second, into one Redis hash per group:
- `p:<partition>` -> `<committed offset>,<end offset>` for the partitions it owns,
- `c:<consumer id>` -> its own report (msgspec JSON of `ConsumerReport`).
Readers sum the partitions for the backlog and the fresh consumer reports for
the delivered rate, so any number of consumers can share the hash.
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
    eta_seconds: float | None
    committed: dict[int, int]
    end_offsets: dict[int, int]
    consumers: int
    # Set while any fresh consumer reports that the backend refuses every order.
    backend_refusal: BackendRefusal | None = None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ConsumerReport)


async def publish(
    redis: RedisClient,
    group_id: str,
    report: ConsumerReport,
    partitions: dict[int, tuple[int, int]],
) -> None:
    """Write one consumer's report and its partitions' (committed, end) offsets."""
    key = progress_key(group_id)
    mapping: dict[str | bytes, bytes | str] = {f"c:{report.consumer_id}": _encoder.encode(report)}
    for partition, (committed, end) in partitions.items():
        mapping[f"p:{partition}"] = f"{committed},{end}"
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
    reports: list[ConsumerReport] = []
    for key_raw, value_raw in raw.items():
        key, value = as_text(key_raw), value_raw
        if key.startswith("p:"):
            c, _, e = as_text(value).partition(",")
            committed[int(key[2:])] = int(c)
            end_offsets[int(key[2:])] = int(e)
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
    rate_for_eta = effective if effective > 0 else 0.0
    eta = backlog / rate_for_eta if rate_for_eta > 0 else (0.0 if backlog == 0 else None)
    return DrainProgress(
        configured_rate=newest.configured_rate if newest else None,
        override_rate=newest.override_rate if newest else None,
        effective_rate=effective,
        paused=newest.paused if newest else False,
        reason=newest.reason if newest else "no consumer running",
        schedule=newest.schedule if newest else None,
        backlog=backlog,
        delivered_per_second=delivered,
        eta_seconds=eta,
        committed=committed,
        end_offsets=end_offsets,
        consumers=len(reports),
        backend_refusal=_refusal(reports),
    )


def _refusal(reports: list[ConsumerReport]) -> BackendRefusal | None:
    refusals = [
        (r.updated_at, r.refusal_status, r.refusal) for r in reports if r.refusal_status is not None
    ]
    if not refusals:
        return None
    _, status, message = max(refusals)
    return BackendRefusal(status, message, len(refusals))

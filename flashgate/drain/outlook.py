"""The drain's outlook read from Redis: progress, ops' override, losses and the projection.

Every reader of the projection (the admin API behind `flashgate status` and the
ops page, the gateway's order status ETA and admission guard, `/metrics`) builds it
here, from what the consumers publish (`flashgate.drain.progress`) and ops set
(`flashgate.drain.control`), through `flashgate.drain.projection`. The schedule is
the one the newest consumer report runs (its settings file applies live); with no
consumer reporting, this process's settings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from flashgate.drain import losses, progress
from flashgate.drain.control import DrainControl, DrainOverride
from flashgate.drain.projection import (
    BacklogState,
    Projection,
    RateInputs,
    drain_seconds,
    project,
)
from flashgate.drain.schedule import Schedule
from flashgate.errors import ConfigError
from flashgate.redis_client import RedisClient
from flashgate.settings import Settings


@dataclass(frozen=True, slots=True)
class Outlook:
    progress: progress.DrainProgress | None
    override: DrainOverride
    projection: Projection
    losses: losses.Losses
    schedule: Schedule

    @property
    def inputs(self) -> RateInputs:
        return rate_inputs(self.progress, self.override)

    def seconds_until(self, records: float) -> float | None:
        """When `records` more orders will have been delivered, from the projection's time."""
        return drain_seconds(records, self.projection.computed_at, self.schedule, self.inputs)


def schedule_of(state: progress.DrainProgress | None, settings: Settings) -> Schedule:
    drain = settings.drain
    if state is not None and state.windows is not None and state.rate_per_s is not None:
        try:
            return Schedule.parse(state.windows, state.timezone or "UTC", state.rate_per_s)
        except ConfigError:
            pass  # a report this version cannot read: fall back to our own settings
    if state is not None and state.consumers > 0 and state.configured_rate is not None:
        # A consumer that does not publish its schedule: its ceiling now, held.
        return Schedule.parse([], "UTC", state.configured_rate)
    return Schedule.parse(drain.schedule, drain.timezone, drain.rate_per_s)


def rate_inputs(state: progress.DrainProgress | None, override: DrainOverride) -> RateInputs:
    adaptive = state.adaptive_rate if state is not None and state.consumers > 0 else None
    return RateInputs(override_rate=override.rate, adaptive_rate=adaptive, paused=override.paused)


async def read(redis: RedisClient, settings: Settings, now: float | None = None) -> Outlook:
    """Read the drain's state from Redis and project it (raises RedisFailure)."""
    group = settings.drain.group_id
    override = await DrainControl(redis, group).get()
    state = await progress.read(redis, group, now)
    lost = await losses.read(redis, group)
    schedule = schedule_of(state, settings)
    backlog = BacklogState(
        backlog=state.backlogs() if state is not None else {},
        oldest_at=state.oldest_at if state is not None else {},
    )
    projection = project(
        backlog,
        schedule,
        rate_inputs(state, override),
        retention_s=settings.kafka.retention_ms / 1000,
        now=time.time() if now is None else now,
    )
    return Outlook(state, override, projection, lost, schedule)

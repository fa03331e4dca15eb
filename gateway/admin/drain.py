"""`GET` and `PUT /admin/v1/drain`: the drain's state, and ops' override and pause.

The override lives in Redis (`flashgate.drain.control`), where every consumer
reads it at least once a second; the state combines it with the progress the
consumers publish (`flashgate.drain.progress`).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from flashgate.drain import outlook
from flashgate.drain.control import DrainControl
from flashgate.redis_client import RedisFailure
from flashgate.settings import Settings
from gateway.admin.audit import audit
from gateway.admin.errors import decode_body
from gateway.body import read_limited_body
from gateway.problems import ApiError, json_response, unavailable

DRAIN_BODY_MAX = 4096
Rate = Annotated[float, msgspec.Meta(ge=0, le=10**7)]


class DrainUpdate(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """`{"rate": 500}`, `{"rate": null}` (back to the config file), `{"paused": true}`."""

    rate: Rate | msgspec.UnsetType | None = msgspec.UNSET
    paused: bool | msgspec.UnsetType = msgspec.UNSET


_decoder = msgspec.json.Decoder(DrainUpdate)


async def drain_state(request: Request) -> dict[str, Any]:
    settings: Settings = request.app.state.settings
    seen = await outlook.read(request.app.state.redis, settings)
    override, state, projection = seen.override, seen.progress, seen.projection
    configured = settings.drain.rate_per_s
    if state is not None and state.configured_rate is not None:
        configured = state.configured_rate
    if state is not None and state.consumers > 0:
        effective, reason = state.effective_rate, state.reason
    elif override.paused:
        effective, reason = 0.0, "pause (no consumer reporting)"
    elif override.rate is not None:
        effective, reason = min(override.rate, configured), "override (no consumer reporting)"
    else:
        effective, reason = configured, "schedule (no consumer reporting)"
    return {
        "configured_rate": configured,
        "override_rate": override.rate,
        "effective_rate": effective,
        "paused": override.paused,
        "reason": reason,
        "schedule": state.schedule if state is not None else None,
        "backlog": state.backlog if state is not None else 0,
        "delivered_per_second": state.delivered_per_second if state is not None else 0.0,
        "eta_seconds": projection.empty_in_s,
        "consumers": state.consumers if state is not None else 0,
        # {"status", "message", "consumers"} while the backend refuses every order.
        "backend_refusal": msgspec.to_builtins(state.backend_refusal)
        if state is not None and state.backend_refusal is not None
        else None,
        "buffer": {
            "retention_s": projection.retention_s,
            "oldest_age_s": projection.oldest_age_s,
            "admitted_delivered_in_s": projection.admitted_delivered_in_s,
            "headroom_s": projection.headroom_s,
            "safety_s": settings.gateway.buffer_safety_s,
        },
        "lost_orders": seen.losses.total,
        "lost_ranges": [msgspec.to_builtins(lost) for lost in seen.losses.ranges],
    }


async def get_drain(request: Request) -> Response:
    try:
        return json_response(await drain_state(request))
    except RedisFailure:
        raise unavailable("Redis is unavailable") from None


async def put_drain(request: Request) -> Response:
    update = decode_body(await read_limited_body(request, DRAIN_BODY_MAX), _decoder)
    if update.rate is msgspec.UNSET and update.paused is msgspec.UNSET:
        raise ApiError(
            422,
            "validation_error",
            "nothing to change",
            extra={"details": [{"field": "$", "error": "give `rate` and/or `paused`"}]},
        )
    control: DrainControl = request.app.state.drain_control
    try:
        if not isinstance(update.rate, msgspec.UnsetType):
            await control.set_rate(update.rate)
        if not isinstance(update.paused, msgspec.UnsetType):
            await control.set_paused(update.paused)
        state = await drain_state(request)
    except RedisFailure:
        raise unavailable("Redis is unavailable; the drain was not changed") from None
    changes = {
        name: value
        for name, value in (("rate", update.rate), ("paused", update.paused))
        if not isinstance(value, msgspec.UnsetType)
    }
    audit(request, "PUT /admin/v1/drain", f"{changes} -> effective {state['effective_rate']}")
    return json_response(state)

"""`GET /v1/orders/{order_id}`: an order's status, and its place in the drain.

While an order is still `accepted`, its position is estimated from the Kafka
partition and offset stored at accept time and the progress consumers publish:
the backlog before it in its own partition, times the number of partitions
(keys spread orders evenly over them); `eta_seconds` is when the drain will have
delivered that many, from the backlog projection (`flashgate.drain.outlook`: the
schedule ahead, override, pause, adaptive limit), left out while it says never.
Both are left out when no consumer reports progress.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import Response

from flashgate.drain import outlook
from flashgate.ids import is_order_id
from flashgate.redis_client import RedisFailure
from gateway.context import GatewayContext
from gateway.problems import ApiError, json_response, unavailable


async def get_order(request: Request) -> Response:
    context: GatewayContext = request.app.state.context
    order_id = request.path_params["order_id"]
    if not is_order_id(order_id):
        raise ApiError(404, "not_found", "no such order")
    try:
        status = await context.statuses.get(order_id)
    except RedisFailure:
        raise unavailable("order status is unavailable right now") from None
    if status is None:
        raise ApiError(404, "not_found", "no such order")
    body: dict[str, object] = {
        "order_id": order_id,
        "status": status.status,
        "accepted_at": status.accepted_at,
    }
    if status.delivered_at is not None:
        body["delivered_at"] = status.delivered_at
    if status.reason is not None:
        body["reason"] = status.reason
    if status.status == "accepted" and status.partition is not None and status.offset is not None:
        body.update(await _position(context, status.partition, status.offset))
    return json_response(body)


async def _position(context: GatewayContext, partition: int, offset: int) -> Mapping[str, object]:
    try:
        seen = await outlook.read(context.redis, context.settings)
    except RedisFailure:
        return {}
    drain = seen.progress
    if drain is None:
        return {}
    committed = drain.committed.get(partition, 0)
    partitions = max(len(drain.end_offsets), context.settings.kafka.partitions, 1)
    position = max(0, offset - committed) * partitions
    result: dict[str, object] = {"position": position}
    eta = seen.seconds_until(position)
    if eta is not None:
        result["eta_seconds"] = round(eta, 3)
    return result

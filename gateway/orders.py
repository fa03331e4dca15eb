"""`POST /v1/orders` and `GET /v1/orders/{order_id}`: the storefront's API.

A 202 is sent only after Kafka acknowledged the record with acks=all; any
failure before that is a 503 and the storefront retries.
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from flashgate.errors import KafkaUnavailable
from flashgate.ids import is_order_id, new_order_id
from flashgate.order import OrderRecord, encode_record
from gateway.body import read_limited_body
from gateway.context import GatewayContext
from gateway.problems import ApiError, json_response, unavailable
from gateway.validation import parse_order

log = logging.getLogger(__name__)


def _context(request: Request) -> GatewayContext:
    context: GatewayContext = request.app.state.context
    return context


def _require_json(request: Request) -> None:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "Content-Type must be application/json")


async def create_order(request: Request) -> Response:
    context = _context(request)
    settings = context.settings
    _require_json(request)
    body = await read_limited_body(request, settings.gateway.max_body_bytes)
    order = parse_order(body)

    accepted_at = time.time()
    order_id = new_order_id(int(accepted_at * 1000))
    record = OrderRecord.from_request(order, order_id, accepted_at)
    try:
        # message.timeout.ms bounds this too; the outer timeout is the belt to its braces.
        await asyncio.wait_for(
            context.producer.produce(
                settings.kafka.orders_topic,
                encode_record(record),
                key=order_id.encode(),
            ),
            timeout=settings.gateway.produce_timeout_ms / 1000 + 1.0,
        )
    except (KafkaUnavailable, TimeoutError) as exc:
        log.warning("order not accepted, Kafka did not acknowledge: %s", exc)
        raise unavailable("the order could not be stored; retry shortly") from None

    try:
        await context.statuses.mark_accepted(order_id, accepted_at)
    except RedisError as exc:
        # The order is durable in Kafka, so it is accepted; only its status lags.
        log.warning("order %s accepted but its status was not written: %s", order_id, exc)

    status_url = f"/v1/orders/{order_id}"
    return json_response(
        {"order_id": order_id, "status": "accepted", "status_url": status_url},
        status=202,
        headers={"Location": status_url},
    )


async def get_order(request: Request) -> Response:
    order_id = request.path_params["order_id"]
    if not is_order_id(order_id):
        raise ApiError(404, "not_found", "no such order")
    try:
        status = await _context(request).statuses.get(order_id)
    except RedisError:
        raise unavailable("order status is unavailable right now") from None
    if status is None:
        raise ApiError(404, "not_found", "no such order")
    return json_response(status)

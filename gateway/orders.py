"""`POST /v1/orders`: admit an order and write it durably to Kafka.

In order: content type, size-limited body, strict schema, the Idempotency-Key
claim, the local sold-out memory, admission in Redis (one atomic step, batched
with concurrent requests), produce to Kafka with acks=all, and wait for the
settler (`settle.py`), which confirms the reservation and writes the status
once Kafka acknowledged the record. A 202 is sent only after that. If Kafka
refused the record, the reservation is given back and the answer is 503
`unavailable`; if Kafka's answer is unknown (timed out in flight), the units
stay reserved, the answer is 503 `outcome_unknown` with the order id, and the
reaper settles the order from what Kafka holds. A retry with the same
Idempotency-Key is answered from the order's status meanwhile.

This is the hot path, so it is a plain ASGI endpoint: headers are read once
from the scope and the answer is sent as two ASGI messages, without
Starlette's request and response objects (the middleware around it is the
same as for every route).
"""

from __future__ import annotations

import logging
import math
import time

import msgspec
from starlette.types import Receive, Scope, Send

from flashgate.admission.admitter import Reservation, Verdict
from flashgate.admission.errors import AdmissionUnavailable
from flashgate.admission.idempotency import Claim, order_digest
from flashgate.admission.sales import rfc3339
from flashgate.errors import KafkaOutcomeUnknown, KafkaUnavailable
from flashgate.ids import new_order_id
from flashgate.kafka.producer import Headers
from flashgate.order import OrderRecord, OrderRequest, encode_record
from flashgate.order_status import NOT_STORED
from flashgate.redis_client import RedisFailure
from gateway.auth import CALLER_SCOPE_KEY, invalid_shopper_token, scope_shopper
from gateway.body import check_declared_length, receive_limited_body
from gateway.context import GatewayContext
from gateway.problems import ApiError, unavailable
from gateway.ratelimit_headers import rate_limit_headers
from gateway.settle import Produced
from gateway.validation import parse_order

log = logging.getLogger(__name__)

IDEMPOTENCY_KEY_MAX = 128
OUTCOME_UNKNOWN = "outcome_unknown"
# Answers worth replaying for a retried Idempotency-Key; anything else (404, 410,
# 422, 429, 503, and a sale not open yet) may come out differently next time, so
# the key is released.
REPLAYED_STATUSES = frozenset({202, 409})
NOT_REPLAYED_CODES = frozenset({"sale_not_open"})
RECORD_HEADERS: Headers = [("content-type", b"application/json"), ("flashgate-record", b"order/1")]
_JSON_TYPE = (b"content-type", b"application/json")
# A refused Kafka connection is fixed by an operator, not in a second.
KAFKA_REFUSED_RETRY_S = 5


class OrderHeaders:
    """The request headers this endpoint reads, found in one pass over the scope."""

    __slots__ = ("content_length", "content_type", "forwarded_for", "idempotency_key")

    def __init__(self, scope: Scope) -> None:
        self.content_type = ""
        self.content_length: str | None = None
        self.idempotency_key: str | None = None
        self.forwarded_for: str | None = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                self.content_type = value.decode("latin-1")
            elif name == b"content-length":
                self.content_length = value.decode("latin-1")
            elif name == b"idempotency-key":
                self.idempotency_key = value.decode("latin-1")
            elif name == b"x-forwarded-for":
                self.forwarded_for = value.decode("latin-1")


def _require_json(content_type: str) -> None:
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise ApiError(415, "unsupported_media_type", "Content-Type must be application/json")


def _idempotency_key(value: str) -> str:
    if 1 <= len(value) <= IDEMPOTENCY_KEY_MAX and all("!" <= c <= "~" for c in value):
        return value
    raise ApiError(
        422,
        "validation_error",
        "the Idempotency-Key header is invalid",
        extra={
            "details": [{"field": "Idempotency-Key", "error": "1 to 128 visible ASCII characters"}]
        },
    )


def client_ip(scope: Scope, forwarded_for: str | None, trust_forwarded_for: bool) -> str:
    if trust_forwarded_for and forwarded_for:
        return forwarded_for.split(",", 1)[0].strip()[:64] or "unknown"
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class Answer:
    """A finished answer: status, JSON body, extra headers."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        self.body = body
        self.headers = headers

    async def send(self, send: Send) -> None:
        headers = [
            _JSON_TYPE,
            (b"content-length", str(len(self.body)).encode()),
            *self.headers,
        ]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def _error_answer(error: ApiError) -> Answer:
    headers = [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    return Answer(error.status, error.body(), headers)


class CreateOrder:
    """The ASGI endpoint of `POST /v1/orders` (a class, so Starlette routes to it as ASGI)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        context: GatewayContext = scope["app"].state.context
        try:
            answer = await _create_order(context, scope, receive)
        except ApiError as error:
            answer = _error_answer(error)
        await answer.send(send)


async def _create_order(context: GatewayContext, scope: Scope, receive: Receive) -> Answer:
    settings = context.settings
    headers = OrderHeaders(scope)
    _require_json(headers.content_type)
    check_declared_length(headers.content_length, settings.gateway.max_body_bytes)
    body = await receive_limited_body(receive, settings.gateway.max_body_bytes)
    order = parse_order(body)
    shopper = scope_shopper(scope)
    if shopper is not None and (shopper.user_id, shopper.sale_id) != (order.user_id, order.sale_id):
        # Per-user limits count vouched-for shoppers only: a minted user id buys nothing.
        raise invalid_shopper_token("the order's user_id and sale_id must be the token's")
    ip = client_ip(scope, headers.forwarded_for, settings.gateway.trust_forwarded_for)
    if headers.idempotency_key is None:
        return await _admit_and_produce(context, order, ip, None)

    key = _idempotency_key(headers.idempotency_key)
    caller = scope.get(CALLER_SCOPE_KEY, "anon")
    digest = order_digest(order)
    wait_s = settings.gateway.produce_timeout_ms / 1000 + 1.0
    order_id = new_order_id(int(time.time() * 1000))
    try:
        claim = await context.idempotency.wait(caller, key, digest, wait_s, order_id)
        if claim.state == "unknown":
            replay = await _answer_from_status(context, claim)
            if replay is not None:
                return replay
            # Settled "not stored": this retry places the order, under the same id.
            claim = await context.idempotency.wait(
                caller, key, digest, wait_s, order_id, retry_unknown=True
            )
    except AdmissionUnavailable as exc:
        log.warning("idempotency check failed: %s", exc)
        raise unavailable("the gateway cannot check the Idempotency-Key; retry shortly") from None
    if claim.state == "unknown":  # settled meanwhile by another retry: ask again
        raise unavailable("another request with this Idempotency-Key is placing the order")
    if claim.state == "reused":
        context.metrics.decision("idempotency_key_reused")
        raise ApiError(
            422, "idempotency_key_reused", "this Idempotency-Key was used with a different order"
        )
    if claim.state == "pending":
        raise unavailable("the first request with this Idempotency-Key is still running")
    if claim.state == "done":
        context.metrics.decision("replayed")
        return _replay(claim)
    try:
        return await _admit_and_produce(context, order, ip, claim)
    except ApiError as error:
        if error.status in REPLAYED_STATUSES and error.code not in NOT_REPLAYED_CODES:
            await _finish(context, claim, error.status, _error_answer(error).body)
        elif error.code != OUTCOME_UNKNOWN:  # that key waits on the order (settle.py)
            await _release(context, claim)
        raise
    except Exception:
        await _release(context, claim)
        raise
    # A cancelled request (CancelledError) leaves its claim to the settler, which
    # stores the answer or frees the key once Kafka has answered.


async def _answer_from_status(context: GatewayContext, claim: Claim) -> Answer | None:
    """The answer to a retry of an order whose Kafka outcome was unknown: the same 503
    while it is pending, a 202 once its record was found; None once it was settled
    "not stored" (the retry may place it)."""
    try:
        status = await context.statuses.get(claim.order_id)
    except RedisFailure as exc:
        raise AdmissionUnavailable(f"reading the order's status failed: {exc}") from exc
    if status is None or status.status == "pending":
        context.metrics.decision("outcome_unknown")
        raise outcome_unknown(context, claim.order_id)
    if status.status == "failed" and status.reason == NOT_STORED:
        return None
    context.metrics.decision("replayed")
    return _accepted_answer(claim.order_id, replayed=True)


def _accepted_answer(order_id: str, *, replayed: bool = False) -> Answer:
    status_url = f"/v1/orders/{order_id}"
    body = b'{"order_id":"%s","status":"accepted","status_url":"%s"}' % (
        order_id.encode(),
        status_url.encode(),
    )
    headers = [(b"location", status_url.encode())]
    if replayed:
        headers.append((b"idempotent-replayed", b"true"))
    return Answer(202, body, headers)


def outcome_unknown(context: GatewayContext, order_id: str) -> ApiError:
    """503 `outcome_unknown`: the client learns the order id and when to look again."""
    gateway = context.settings.gateway
    retry_after = max(1, math.ceil(gateway.reservation_ttl_s + gateway.reaper_interval_s))
    return ApiError(
        503,
        OUTCOME_UNKNOWN,
        "Kafka's answer for this order is unknown; its status settles to accepted or "
        "failed (not_stored) shortly: poll status_url, or retry with the same "
        "Idempotency-Key",
        headers={"Retry-After": str(retry_after)},
        extra={"order_id": order_id, "status_url": f"/v1/orders/{order_id}"},
    )


def _replay(claim: Claim) -> Answer:
    headers = [(b"idempotent-replayed", b"true")]
    if claim.status == 202:
        answer = msgspec.json.decode(claim.answer)
        headers.append((b"location", str(answer.get("status_url", "")).encode()))
    return Answer(claim.status, claim.answer, headers)


async def _finish(context: GatewayContext, claim: Claim, status: int, answer: bytes) -> None:
    try:
        await context.idempotency.finish(claim, status, answer)
    except AdmissionUnavailable as exc:
        log.warning("idempotent answer not stored: %s", exc)


async def _release(context: GatewayContext, claim: Claim) -> None:
    try:
        await context.idempotency.release(claim)
    except AdmissionUnavailable as exc:
        log.warning("Idempotency-Key not released (it expires on its own): %s", exc)


def _sold_out(order: OrderRequest, remaining: int) -> ApiError:
    return ApiError(
        409,
        "sold_out",
        f"not enough stock left for SKU {order.sku!r}",
        extra={"remaining": remaining},
    )


def _too_many(per_order_max: int) -> ApiError:
    return ApiError(
        422,
        "validation_error",
        "the order does not match the schema",
        extra={"details": [{"field": "quantity", "error": f"at most {per_order_max} per order"}]},
    )


def _refusal(context: GatewayContext, order: OrderRequest, verdict: Verdict) -> ApiError:
    if verdict.reason in ("unknown_sale", "unknown_sku"):
        context.metrics.decision("unknown_sale")
        return ApiError(
            404, "unknown_sale", f"sale {order.sale_id!r} has no stock loaded for SKU {order.sku!r}"
        )
    if verdict.reason == "quantity":
        context.metrics.decision("quantity")
        return _too_many(verdict.limit or 0)
    if verdict.reason == "sold_out":
        context.metrics.decision("sold_out")
        if verdict.remaining == 0 and verdict.limit is not None:
            context.sold_out.mark(order.sale_id, order.sku, verdict.limit)
        return _sold_out(order, verdict.remaining or 0)
    if verdict.reason == "purchase_limit":
        context.metrics.decision("purchase_limit")
        return ApiError(
            409,
            "purchase_limit",
            f"user {order.user_id!r} reached this sale's limit of {verdict.limit} units",
            extra={"per_user_max": verdict.limit, "bought": verdict.bought},
        )
    if verdict.reason == "sale_not_open":
        context.metrics.decision("sale_not_open")
        opens_at = rfc3339(verdict.at_ms)
        return ApiError(
            409,
            "sale_not_open",
            f"sale {order.sale_id!r} opens at {opens_at}",
            headers={"Retry-After": str(max(1, math.ceil(verdict.retry_after_ms / 1000)))},
            extra={"opens_at": opens_at},
        )
    if verdict.reason == "sale_closed":
        context.metrics.decision("sale_closed")
        closes_at = rfc3339(verdict.at_ms)
        return ApiError(
            410, "sale_closed", f"sale {order.sale_id!r} closed at {closes_at}",
            extra={"closes_at": closes_at},
        )  # fmt: skip
    limiter = verdict.limiter or "sale"
    context.metrics.decision(f"rate_limited_{limiter}")
    return ApiError(
        429,
        "rate_limited",
        f"too many orders ({limiter} limit); retry later",
        headers=rate_limit_headers(
            limiter, verdict.retry_after_ms, verdict.burst, verdict.rate_per_s
        ),
        extra={"limit": limiter},
    )


async def _guard_backlog(context: GatewayContext, sale_id: str) -> None:
    """503 `backlog_full` before reserving anything when the drain would deliver this
    order after Kafka's retention allows (gateway/backlog_guard.py)."""
    full = await context.guard.check(sale_id)
    if full is None:
        return
    if not full.refuse:
        context.metrics.decision("backlog_full_accepted")
        return
    context.metrics.decision("backlog_full")
    when = "never" if full.delivered_in_s is None else f"in {full.delivered_in_s:.0f} s"
    raise ApiError(
        503,
        "backlog_full",
        f"the order would be delivered {when}, beyond the {full.limit_s:.0f} s the buffer "
        "holds it safely; retry after Retry-After",
        headers={"Retry-After": str(full.retry_after_s)},
        extra={
            "delivered_in_s": full.delivered_in_s,
            "limit_s": full.limit_s,
            "projected_at": full.projected_at,
        },
    )


async def _admit_and_produce(
    context: GatewayContext, order: OrderRequest, ip: str, claim: Claim | None
) -> Answer:
    settings = context.settings
    if context.producer.refusal is not None:
        # Kafka refuses the connection (authentication, TLS): no record could be sent,
        # so nothing is reserved; the cause is in the log and on /readyz.
        context.metrics.decision("unavailable")
        raise unavailable("orders cannot be stored right now; retry shortly", KAFKA_REFUSED_RETRY_S)
    await _guard_backlog(context, order.sale_id)
    # A retry's earlier attempt may hold a unit its answer never reported (lost to a
    # Redis failover): only admission finds it. The local memory would answer 409 and
    # leave that unit held until the reaper returns it, after the shopper has gone.
    retried = claim is not None and claim.retry
    per_order_max = None if retried else context.sold_out.lookup(order.sale_id, order.sku)
    if per_order_max is not None:
        if order.quantity > per_order_max:
            context.metrics.decision("quantity")
            raise _too_many(per_order_max)
        context.metrics.decision("sold_out_local")
        raise _sold_out(order, 0)
    accepted_at = time.time()
    # A retried Idempotency-Key keeps its order id: if the first attempt's record did
    # reach Kafka after all, the backend sees the same order twice and stores it once.
    order_id = claim.order_id if claim and claim.order_id else new_order_id(int(accepted_at * 1000))
    reservation = Reservation(order_id, order.sale_id, order.sku, order.quantity, order.user_id)
    try:
        verdict = await context.admitter.admit(reservation, ip)
        if verdict.reason == "ticket":  # the sale's fair start: answered after its draw
            verdict = await context.admitter.await_draw(reservation, ip, verdict)
    except AdmissionUnavailable as exc:
        log.warning("admission failed: %s", exc)
        context.metrics.decision("unavailable")
        raise unavailable("admission is unavailable right now; retry shortly") from None
    if verdict.reason == "accepted":
        # A reaper found this order's record after its gateway died: it is placed.
        context.metrics.decision("replayed")
        replay = _accepted_answer(order_id, replayed=True)
        if claim is not None:
            await _finish(context, claim, 202, replay.body)
        return replay
    if not verdict.admitted:
        raise _refusal(context, order, verdict)
    if verdict.remaining == 0 and verdict.limit is not None:
        context.sold_out.mark(order.sale_id, order.sku, verdict.limit)

    record = OrderRecord.from_request(order, order_id, accepted_at)
    accepted = _accepted_answer(order_id)
    produced_order = Produced(reservation, accepted_at, verdict.held, claim, accepted.body)
    try:
        produced = context.producer.send(
            settings.kafka.orders_topic, encode_record(record), order_id.encode(), RECORD_HEADERS
        )
    except KafkaUnavailable as exc:  # the local queue is full: backpressure
        log.warning("order not accepted: %s", exc)
        failure = await context.settler.give_back(produced_order, exc)
        if isinstance(failure, KafkaOutcomeUnknown):
            context.metrics.decision("outcome_unknown")
            raise outcome_unknown(context, order_id) from None
        context.metrics.decision("unavailable")
        raise unavailable("the gateway is overloaded; retry shortly") from None
    # From here the settler sees the order through, even if this request is cancelled.
    try:
        outcome = await context.settler.follow(produced, produced_order)
    except KafkaUnavailable as exc:
        outcome = exc
    if isinstance(outcome, KafkaOutcomeUnknown):
        context.metrics.decision("outcome_unknown")
        raise outcome_unknown(context, order_id)
    if isinstance(outcome, KafkaUnavailable):
        context.metrics.decision("unavailable")
        raise unavailable("the order could not be stored; retry shortly")
    context.metrics.decision("accepted")
    return accepted

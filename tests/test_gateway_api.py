"""The public API's status table, row by row, on a real gateway, Kafka and Redis.

One gateway process serves the whole module (storefront tokens configured,
X-Forwarded-For trusted so per-IP limits can be exercised); each test uses its
own sale.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.error
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from redis import asyncio as aioredis

from flashgate.admission import admitter as admitter_module
from flashgate.admission import idempotency as idempotency_module
from flashgate.admission.admitter import Admitter, Reservation
from flashgate.admission.idempotency import IdempotencyStore, order_digest
from flashgate.admission.keys import idempotency_scope
from flashgate.ids import new_order_id
from flashgate.redis_scripts.loader import RedisScripts
from flashgate.stack.kafka_broker import KafkaBroker
from flashgate.stack.redis_server import RedisServer
from gateway.validation import parse_order
from tests.gateway_client import OPEN_RATES, ORDER, Answer, Client, new_env, running_gateway
from tests.services import ServiceEnv, admin_json, load_sale

TOKEN = "storefront-token-1"
T = TypeVar("T")


@pytest.fixture(scope="module")
def env(
    kafka_broker: KafkaBroker, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceEnv]:
    env = new_env(kafka_broker, redis_server, tmp_path_factory.mktemp("gateway-api"))
    yield from (
        env
        for _ in running_gateway(
            env,
            FLASHGATE_GATEWAY_STOREFRONT_TOKENS=f"{TOKEN},storefront-token-2",
            FLASHGATE_GATEWAY_TRUST_FORWARDED_FOR="true",
        )
    )


def run(env: ServiceEnv, body: Callable[[Client], Awaitable[T]]) -> T:
    async def main() -> T:
        async with Client(env.gateway_url, TOKEN) as client:
            return await body(client)

    return asyncio.run(main())


def sale(env: ServiceEnv, **fields: Any) -> str:
    sale_id = f"sale-{uuid.uuid4().hex[:8]}"
    fields.setdefault("rates", OPEN_RATES)
    fields.setdefault("stock", {"A": 100})
    load_sale(env, sale_id, fields)
    return sale_id


def test_202_accepted_and_status(env: ServiceEnv) -> None:
    sale_id = sale(env)

    async def body(client: Client) -> None:
        answer = await client.order(sale_id=sale_id, attributes={"channel": "app"})
        assert answer.status == 202
        order_id = answer.body["order_id"]
        assert answer.body == {
            "order_id": order_id,
            "status": "accepted",
            "status_url": f"/v1/orders/{order_id}",
        }
        assert answer.headers["Location"] == f"/v1/orders/{order_id}"
        status = await client.call("GET", f"/v1/orders/{order_id}")
        assert status.status == 200
        assert status.body["status"] == "accepted"
        assert status.body["order_id"] == order_id
        assert status.body["accepted_at"] > 0
        for unknown in (new_order_id(), "not-an-id", "..%2F..%2Fetc"):
            missing = await client.call("GET", f"/v1/orders/{unknown}")
            assert (missing.status, missing.body["error"]) == (404, "not_found")

    run(env, body)
    report = admin_json(env, "GET", f"/admin/v1/sales/{sale_id}")
    assert report["skus"]["A"] == {"loaded": 100, "remaining": 99, "reserved": 0, "accepted": 1}
    assert report["accepted_orders"] == 1


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b"\xff\xfe", b'{"sale_id": "s"}x'])
def test_400_invalid_json(env: ServiceEnv, raw: bytes) -> None:
    answer = run(env, lambda c: c.call("POST", "/v1/orders", data=raw))
    assert (answer.status, answer.body["error"]) == (400, "invalid_json")
    assert answer.body["message"]


@pytest.mark.parametrize(
    "authorization", [None, "Bearer nope", "Basic c3RvcmVmcm9udC10b2tlbi0x", "Bearer", "bearer  "]
)
def test_401_without_a_valid_token(env: ServiceEnv, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}

    async def body(client: Client) -> None:
        for method, path in (("POST", "/v1/orders"), ("GET", f"/v1/orders/{new_order_id()}")):
            answer = await client.call(method, path, body={}, headers=headers, token="")
            assert (answer.status, answer.body["error"]) == (401, "unauthorized")
            assert answer.headers["WWW-Authenticate"] == "Bearer"
        # The second configured token works too; probes need none.
        ok = await client.call("GET", "/healthz", token="")
        assert ok.status == 200
        other = await client.call("GET", f"/v1/orders/{new_order_id()}", token="storefront-token-2")
        assert other.status == 404

    run(env, body)


def test_404_unknown_sale_or_sku(env: ServiceEnv) -> None:
    sale_id = sale(env)

    async def body(client: Client) -> None:
        for target, sku in (("never-loaded", "A"), (sale_id, "B")):
            answer = await client.order(sale_id=target, sku=sku)
            assert (answer.status, answer.body["error"]) == (404, "unknown_sale")

    run(env, body)


def test_409_sold_out_then_answered_locally(env: ServiceEnv) -> None:
    sale_id = sale(env, stock={"A": 2}, per_order_max=3)

    async def body(client: Client) -> None:
        assert (await client.order(sale_id=sale_id, quantity=2)).status == 202
        for quantity in (1, 2):  # the second comes from the local sold-out memory
            answer = await client.order(sale_id=sale_id, quantity=quantity)
            assert (answer.status, answer.body["error"]) == (409, "sold_out")
            assert answer.body["remaining"] == 0
        # Too large is still a 422, not a 409, even when sold out.
        too_many = await client.order(sale_id=sale_id, quantity=4)
        assert (too_many.status, too_many.body["error"]) == (422, "validation_error")
        assert too_many.body["details"][0]["field"] == "quantity"

    run(env, body)
    # A reload brings stock back at once (the admin listener clears the local memory).
    load_sale(env, sale_id, {"stock": {"A": 3}, "rates": OPEN_RATES})
    assert run(env, lambda c: c.order(sale_id=sale_id)).status == 202


def test_409_sold_out_when_too_few_left(env: ServiceEnv) -> None:
    sale_id = sale(env, stock={"A": 3})

    async def body(client: Client) -> None:
        assert (await client.order(sale_id=sale_id, quantity=2)).status == 202
        answer = await client.order(sale_id=sale_id, quantity=2)
        assert (answer.status, answer.body["error"], answer.body["remaining"]) == (
            409,
            "sold_out",
            1,
        )
        assert (await client.order(sale_id=sale_id, quantity=1)).status == 202

    run(env, body)


def test_a_retry_finds_the_unit_its_lost_answer_reserved_after_a_sell_out(
    env: ServiceEnv,
) -> None:
    """A first attempt reserved a unit but its answer was lost (a Redis failover closed
    the connection after admit.lua ran) and its key was released: the retry, with the
    same Idempotency-Key, gets that unit, even once this gateway remembers the SKU as
    sold out. (Answered from that memory, it got 409 and the unit stayed held until the
    reaper returned it, after the shopper had gone: one unit unsold in a chaos run.)"""
    sale_id = sale(env, stock={"A": 2})
    order = {**ORDER, "sale_id": sale_id, "user_id": "u-lost-answer"}
    key = uuid.uuid4().hex
    first_attempt = new_order_id()
    asyncio.run(_attempt_whose_answer_was_lost(env, order, key, first_attempt))

    async def body(client: Client) -> None:
        assert (await client.order(sale_id=sale_id, user_id="u-last")).status == 202
        refused = await client.order(sale_id=sale_id, user_id="u-late")  # from the memory
        assert (refused.status, refused.body["error"]) == (409, "sold_out")
        retry = await client.order(headers={"Idempotency-Key": key}, **order)
        assert retry.status == 202, retry.body
        assert retry.body["order_id"] == first_attempt

    run(env, body)
    report = admin_json(env, "GET", f"/admin/v1/sales/{sale_id}")
    assert report["skus"]["A"] == {"loaded": 2, "remaining": 0, "reserved": 0, "accepted": 2}


async def _attempt_whose_answer_was_lost(
    env: ServiceEnv, order: dict[str, Any], key: str, order_id: str
) -> None:
    """What a gateway left in Redis when admission's answer was lost: the key claimed
    and released (its order id kept), the unit reserved under that order id."""
    client = aioredis.Redis.from_url(env.variables["FLASHGATE_REDIS_URL"])
    try:
        scripts = RedisScripts(client, (*admitter_module.SCRIPTS, *idempotency_module.SCRIPTS))
        store = IdempotencyStore(scripts, ttl_s=600, pending_ttl_s=10)
        digest = order_digest(parse_order(json.dumps(order).encode()))
        claim = await store.begin(idempotency_scope(TOKEN), key, digest, order_id)
        assert (claim.state, claim.retry) == ("new", False)
        admitter = Admitter(scripts, reservation_ttl_ms=60_000, batching=False)
        reservation = Reservation(order_id, order["sale_id"], "A", 1, order["user_id"])
        assert (await admitter.admit(reservation, "127.0.0.1")).admitted
        await store.release(claim)
    finally:
        await client.aclose()


def test_409_purchase_limit(env: ServiceEnv) -> None:
    sale_id = sale(env, per_user_max=2)

    async def body(client: Client) -> None:
        assert (await client.order(sale_id=sale_id, quantity=2)).status == 202
        answer = await client.order(sale_id=sale_id)
        assert (answer.status, answer.body["error"]) == (409, "purchase_limit")
        assert (answer.body["per_user_max"], answer.body["bought"]) == (2, 2)
        assert (await client.order(sale_id=sale_id, user_id="u2")).status == 202

    run(env, body)


def test_413_payload_too_large(env: ServiceEnv) -> None:
    """A declared Content-Length over the limit. A chunked body that grows past it is
    refused while it is read: test_bad_input sends that over a raw socket, which reads
    the 413 even when the server closes before the client has sent everything (an
    HTTP client library then fails its write first, about one run in ten)."""
    big = b'{"sale_id": "' + b"x" * 9000 + b'"}'

    async def body(client: Client) -> None:
        declared = await client.call("POST", "/v1/orders", data=big)
        assert (declared.status, declared.body["error"]) == (413, "payload_too_large")

    run(env, body)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_415_unsupported_media_type(env: ServiceEnv, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    answer = run(
        env,
        lambda c: c.call("POST", "/v1/orders", data=b"{}", headers=headers, json_type=False),
    )
    assert (answer.status, answer.body["error"]) == (415, "unsupported_media_type")


def test_json_with_charset_is_accepted(env: ServiceEnv) -> None:
    sale_id = sale(env)
    answer = run(
        env,
        lambda c: c.call(
            "POST",
            "/v1/orders",
            body={"sale_id": sale_id, "sku": "A", "quantity": 1, "user_id": "u"},
            headers={"Content-Type": "Application/JSON; charset=utf-8"},
        ),
    )
    assert answer.status == 202


def test_422_lists_every_bad_field(env: ServiceEnv) -> None:
    bad = {"sale_id": "bad id", "sku": "", "quantity": 0, "extra": 1}
    answer = run(env, lambda c: c.call("POST", "/v1/orders", body=bad))
    assert (answer.status, answer.body["error"]) == (422, "validation_error")
    fields = {d["field"] for d in answer.body["details"]}
    assert fields == {"sale_id", "sku", "quantity", "user_id", "extra"}


def test_422_quantity_over_the_sales_per_order_max(env: ServiceEnv) -> None:
    default_sale = sale(env)
    strict_sale = sale(env, per_order_max=2)

    async def body(client: Client) -> None:
        assert (await client.order(sale_id=default_sale, quantity=10)).status == 202
        for sale_id, quantity, limit in ((default_sale, 11, 10), (strict_sale, 3, 2)):
            answer = await client.order(sale_id=sale_id, quantity=quantity)
            assert (answer.status, answer.body["error"]) == (422, "validation_error")
            assert answer.body["details"] == [
                {"field": "quantity", "error": f"at most {limit} per order"}
            ]

    run(env, body)


def test_422_idempotency_key_reused_or_invalid(env: ServiceEnv) -> None:
    sale_id = sale(env)
    key = {"Idempotency-Key": f"key-{uuid.uuid4().hex}"}

    async def body(client: Client) -> None:
        first = await client.order(headers=key, sale_id=sale_id)
        again = await client.order(headers=key, sale_id=sale_id)
        assert (first.status, again.status) == (202, 202)
        assert again.body["order_id"] == first.body["order_id"]
        assert again.headers["Idempotent-Replayed"] == "true"
        assert "Idempotent-Replayed" not in first.headers
        other = await client.order(headers=key, sale_id=sale_id, quantity=2)
        assert (other.status, other.body["error"]) == (422, "idempotency_key_reused")
        # The same key under another storefront token is another key.
        mine = await client.call(
            "POST",
            "/v1/orders",
            body={"sale_id": sale_id, "sku": "A", "quantity": 2, "user_id": "u1"},
            headers=key,
            token="storefront-token-2",
        )
        assert mine.status == 202
        for invalid in ("", "x" * 129, "has space", "ünï"):
            answer = await client.order(headers={"Idempotency-Key": invalid}, sale_id=sale_id)
            assert (answer.status, answer.body["error"]) == (422, "validation_error")

    run(env, body)
    assert admin_json(env, "GET", f"/admin/v1/sales/{sale_id}")["accepted_units"] == 3


def test_409_answers_are_replayed_too(env: ServiceEnv) -> None:
    sale_id = sale(env, stock={"A": 1})
    key = {"Idempotency-Key": f"key-{uuid.uuid4().hex}"}

    async def body(client: Client) -> None:
        assert (await client.order(sale_id=sale_id, user_id="first")).status == 202
        refused = await client.order(headers=key, sale_id=sale_id)
        load_sale(env, sale_id, {"stock": {"A": 5}, "rates": OPEN_RATES})
        replayed = await client.order(headers=key, sale_id=sale_id)
        assert (refused.status, replayed.status) == (409, 409)
        assert replayed.body == refused.body
        assert replayed.headers["Idempotent-Replayed"] == "true"

    run(env, body)


def _redis_now(env: ServiceEnv) -> datetime:
    """Redis's clock: the one every gateway judges a sale's schedule by."""
    client = redis.Redis.from_url(env.variables["FLASHGATE_REDIS_URL"])
    try:
        seconds, micros = client.time()
    finally:
        client.close()
    return datetime.fromtimestamp(seconds + micros / 1e6, UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_409_sale_not_open_then_open_by_itself_then_410_closed(env: ServiceEnv) -> None:
    now = _redis_now(env)
    opens, closes = now + timedelta(seconds=3), now + timedelta(seconds=6)
    sale_id = sale(env, opens_at=_iso(opens), closes_at=_iso(closes))
    key = {"Idempotency-Key": f"key-{uuid.uuid4().hex}"}
    report = admin_json(env, "GET", f"/admin/v1/sales/{sale_id}")
    assert (report["state"], report["opens_at"], report["closes_at"]) == (
        "scheduled", _iso(opens), _iso(closes)
    )  # fmt: skip
    assert 0 < report["seconds_to_open"] <= 3

    async def body(client: Client) -> None:
        early = await client.order(headers=key, sale_id=sale_id)
        assert (early.status, early.body["error"]) == (409, "sale_not_open")
        assert early.body["opens_at"] == _iso(opens)
        assert 1 <= int(early.headers["Retry-After"]) <= 3
        # Nothing was reserved, and the not-open answer is not kept for the key.
        assert admin_json(env, "GET", f"/admin/v1/sales/{sale_id}")["skus"]["A"]["remaining"] == 100
        deadline = time.monotonic() + 10
        answer = early
        while answer.status == 409 and time.monotonic() < deadline:
            await asyncio.sleep(min(0.2, int(answer.headers["Retry-After"])))
            answer = await client.order(headers=key, sale_id=sale_id)
        assert answer.status == 202, answer.body  # the same key, now placed
        assert _redis_now(env) >= opens
        assert admin_json(env, "GET", f"/admin/v1/sales/{sale_id}")["state"] == "open"
        while answer.status == 202 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            answer = await client.order(sale_id=sale_id, user_id=f"u-{uuid.uuid4().hex[:6]}")
        assert (answer.status, answer.body["error"]) == (410, "sale_closed")
        assert answer.body["closes_at"] == _iso(closes)
        assert _redis_now(env) >= closes

    run(env, body)
    report = admin_json(env, "GET", f"/admin/v1/sales/{sale_id}")
    assert report["state"] == "closed" and report["seconds_to_open"] is None
    # Every 202 holds its units: stock moved by exactly what was accepted.
    assert report["skus"]["A"]["remaining"] == 100 - report["accepted_units"] - sum(
        sku["reserved"] for sku in report["skus"].values()
    )


def test_a_fair_start_admits_the_window_by_lottery_and_oversells_nothing(env: ServiceEnv) -> None:
    """1,000 shoppers at the opening of a 100-unit sale with a 500 ms fair start: each
    is answered once the draw decided, exactly 100 get a 202, the rest 409 sold_out."""
    opens = _redis_now(env) + timedelta(seconds=2)
    sale_id = sale(env, stock={"A": 100}, per_user_max=0, opens_at=_iso(opens), fair_start_ms=500)
    assert admin_json(env, "GET", f"/admin/v1/sales/{sale_id}")["fair_start_ms"] == 500

    async def body(client: Client) -> list[Answer]:
        # The opening is a moment on Redis's clock, not an event anything signals.
        await asyncio.sleep(max(0.0, (opens - _redis_now(env)).total_seconds()) + 0.01)
        assert _redis_now(env) >= opens
        return await asyncio.gather(
            *(client.order(sale_id=sale_id, user_id=f"u{i}") for i in range(1000))
        )

    answers = asyncio.run(_with_connections(env, 1000, body))
    statuses = [answer.status for answer in answers]
    assert statuses.count(202) == 100, sorted(set(statuses))
    assert {a.body["error"] for a in answers if a.status != 202} == {"sold_out"}
    report = admin_json(env, "GET", f"/admin/v1/sales/{sale_id}")
    assert report["skus"]["A"]["remaining"] == 0
    assert report["accepted_units"] + report["skus"]["A"]["reserved"] == 100


async def _with_connections(
    env: ServiceEnv, connections: int, body: Callable[[Client], Awaitable[T]]
) -> T:
    async with Client(env.gateway_url, TOKEN, connections=connections) as client:
        return await body(client)


@pytest.mark.parametrize(
    "schedule",
    [
        {"opens_at": "2030-01-01T10:00:00Z", "closes_at": "2030-01-01T09:00:00Z"},
        {"opens_at": "2030-01-01T10:00:00"},  # no offset: a different time on every machine
        {"closes_at": "next tuesday"},
    ],
    ids=["closes-before-opens", "no-offset", "not-a-time"],
)
def test_a_bad_schedule_is_refused_with_422(env: ServiceEnv, schedule: dict[str, str]) -> None:
    sale_id = f"sale-{uuid.uuid4().hex[:8]}"
    with pytest.raises(urllib.error.HTTPError) as refused:
        load_sale(env, sale_id, {"stock": {"A": 1}, **schedule})
    assert refused.value.code == 422
    assert json.loads(refused.value.read())["error"] == "validation_error"


def test_a_sale_loaded_ahead_can_be_rescheduled_until_it_opens(env: ServiceEnv) -> None:
    later = _redis_now(env) + timedelta(hours=1)
    sale_id = sale(env, opens_at=_iso(later))
    assert admin_json(env, "GET", f"/admin/v1/sales/{sale_id}")["state"] == "scheduled"
    load_sale(env, sale_id, {"stock": {"A": 100}, "rates": OPEN_RATES})  # opened now

    async def body(client: Client) -> None:
        assert (await client.order(sale_id=sale_id)).status == 202

    run(env, body)
    assert admin_json(env, "GET", f"/admin/v1/sales/{sale_id}")["state"] == "open"


@pytest.mark.parametrize("limiter", ["sale", "user", "ip"])
def test_429_names_the_limit_with_ietf_headers(env: ServiceEnv, limiter: str) -> None:
    rates = {**OPEN_RATES, limiter: {"per_second": 0.5, "burst": 2}}
    sale_id = sale(env, rates=rates)

    async def body(client: Client) -> None:
        answers = []
        for i in range(3):
            # Vary what the other limiters key on, so only `limiter` can refuse.
            user = "same-user" if limiter == "user" else f"user-{i}"
            ip = "10.9.9.9" if limiter == "ip" else f"10.0.0.{i}"
            answers.append(
                await client.order(headers={"X-Forwarded-For": ip}, sale_id=sale_id, user_id=user)
            )
        assert [a.status for a in answers] == [202, 202, 429]
        refused = answers[2]
        assert refused.body["error"] == "rate_limited"
        assert refused.body["limit"] == limiter
        assert refused.headers["Retry-After"] == "2"
        assert refused.headers["RateLimit-Policy"] == f'"{limiter}";q=2;w=4'
        assert refused.headers["RateLimit"] == f'"{limiter}";r=0;t=2'

    run(env, body)


def test_probes_metrics_and_openapi(env: ServiceEnv) -> None:
    async def body(client: Client) -> None:
        assert (await client.call("GET", "/healthz")).body == {"status": "ok"}
        ready = await client.call("GET", "/readyz")
        assert ready.status == 200
        assert ready.body["checks"] == {"kafka": True, "redis": True}
        metrics = await client.call("GET", "/metrics")
        text = metrics.body.decode() if isinstance(metrics.body, bytes) else str(metrics.body)
        for needle in (
            'flashgate_gateway_requests_total{route="/v1/orders",status="202"}',
            'flashgate_admission_decisions_total{decision="accepted"}',
            "flashgate_gateway_produce_seconds_bucket",
            'flashgate_gateway_redis_seconds_count{step="admit"}',
            'flashgate_gateway_redis_seconds_count{step="settle"}',
            "flashgate_gateway_in_flight 1.0",  # this scrape itself
        ):
            assert needle in text
        document = await client.call("GET", "/openapi.json")
        assert document.status == 200
        assert document.body["openapi"].startswith("3.")
        wrong = await client.call("DELETE", "/v1/orders")
        assert (wrong.status, wrong.body["error"]) == (405, "method_not_allowed")

    run(env, body)


def test_no_input_yields_a_5xx(env: ServiceEnv) -> None:
    sale_id = sale(env)
    rng = random.Random(7)
    valid = f'{{"sale_id":"{sale_id}","sku":"A","quantity":1,"user_id":"u"}}'.encode()
    bodies: list[bytes] = [
        b"null", b"[]", b"1e999", b'"x"', b"{}" * 100, b"[" * 5000 + b"]" * 5000,
        b'{"sale_id":' + b"9" * 5000 + b"}", valid.replace(b"1", b"1.0"),
        valid.replace(b'"u"', b'"\\ud800"'), valid[:-1], valid + b"\x00",
        b'{"sale_id":"s","sku":"A","quantity":1,"user_id":"u","attributes":{"a":{"b":1}}}',
    ]  # fmt: skip
    bodies += [rng.randbytes(rng.randint(1, 400)) for _ in range(60)]
    bodies += [bytes(b ^ rng.getrandbits(1) for b in valid) for _ in range(60)]
    header_sets: list[dict[str, str]] = [
        {},
        {"Idempotency-Key": "k" * 128},
        {"X-Forwarded-For": "not-an-ip, 1.2.3.4"},
        {"X-Forwarded-For": ""},
        {"Content-Type": "application/json; charset=latin-1"},
    ]

    async def body(client: Client) -> list[int]:
        statuses = []
        for index, raw in enumerate(bodies):
            answer = await client.call(
                "POST", "/v1/orders", data=raw, headers=header_sets[index % len(header_sets)]
            )
            statuses.append(answer.status)
            is_error = isinstance(answer.body, dict) and "error" in answer.body
            assert is_error or answer.status == 202
        for path in ("/v1/orders/%00", "/v1/orders/" + "A" * 5000, "/v1//orders", "/%ff"):
            statuses.append((await client.call("GET", path)).status)
        return statuses

    statuses = run(env, body)
    assert all(status < 500 for status in statuses), statuses


def test_readiness_and_openapi_need_no_token(env: ServiceEnv, tmp_path: Path) -> None:
    async def body(client: Client) -> None:
        for path in ("/readyz", "/metrics", "/openapi.json"):
            assert (await client.call("GET", path, token="")).status == 200

    run(env, body)

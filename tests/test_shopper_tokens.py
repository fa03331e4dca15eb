"""Signed shopper tokens on a real gateway, Kafka and Redis: browsers that call flashgate
directly carry a token their storefront signed, and a minted user id buys nothing.

One gateway serves the module, with a storefront token, two active shopper-token
secrets (a rotation in progress) and one CORS origin.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import jwt
import pytest

from flashgate.secret import Secret
from flashgate.stack.kafka_broker import KafkaBroker
from flashgate.stack.redis_server import RedisServer
from gateway.shopper_tokens import InvalidShopperToken, Shopper, ShopperTokens
from tests.gateway_client import OPEN_RATES, Answer, Client, new_env, running_gateway
from tests.services import ServiceEnv, admin_json, load_sale

STOREFRONT = "storefront-token-1"
NEW_SECRET = "n" * 32 + "-2026-12"
OLD_SECRET = "o" * 32 + "-2026-11"
ORIGIN = "https://shop.example"
T = TypeVar("T")


def shopper_token(user_id: str, sale_id: str, secret: str = NEW_SECRET, ttl_s: int = 600) -> str:
    """What a storefront does (README's example)."""
    claims = {"sub": user_id, "sale": sale_id, "exp": int(time.time()) + ttl_s}
    return jwt.encode(claims, secret, algorithm="HS256")


@pytest.fixture(scope="module")
def env(
    kafka_broker: KafkaBroker, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceEnv]:
    env = new_env(kafka_broker, redis_server, tmp_path_factory.mktemp("shopper-tokens"))
    yield from (
        env
        for _ in running_gateway(
            env,
            FLASHGATE_GATEWAY_STOREFRONT_TOKENS=STOREFRONT,
            FLASHGATE_GATEWAY_SHOPPER_TOKEN_SECRETS=f"{NEW_SECRET},{OLD_SECRET}",
            FLASHGATE_GATEWAY_CORS_ORIGINS=ORIGIN,
        )
    )


def sale(env: ServiceEnv, **fields: Any) -> str:
    sale_id = f"sale-{uuid.uuid4().hex[:8]}"
    load_sale(env, sale_id, {"stock": {"A": 100}, "rates": OPEN_RATES, **fields})
    return sale_id


def as_caller(env: ServiceEnv, token: str | None, body: Callable[[Client], Awaitable[T]]) -> T:
    async def main() -> T:
        async with Client(env.gateway_url, token) as client:
            return await body(client)

    return asyncio.run(main())


def order(env: ServiceEnv, token: str | None, sale_id: str, user_id: str, **extra: Any) -> Answer:
    async def body(client: Client) -> Answer:
        return await client.order(sale_id=sale_id, user_id=user_id, **extra)

    return as_caller(env, token, body)


def test_a_shopper_token_of_either_active_secret_places_that_shoppers_order(
    env: ServiceEnv,
) -> None:
    sale_id = sale(env)
    for secret in (NEW_SECRET, OLD_SECRET):
        user = f"u-{uuid.uuid4().hex[:6]}"
        answer = order(env, shopper_token(user, sale_id, secret), sale_id, user)
        assert answer.status == 202, answer.body
        # The shopper reads their own order's status with the same token.
        path = f"/v1/orders/{answer.body['order_id']}"

        async def read(client: Client, path: str = path) -> Answer:
            return await client.call("GET", path)

        status = as_caller(env, shopper_token(user, sale_id, secret), read)
        assert status.status == 200 and status.body["status"] == "accepted"
    # The storefront's own token still places orders for any user it vouches for.
    assert order(env, STOREFRONT, sale_id, "anyone").status == 202
    assert admin_json(env, "GET", f"/admin/v1/sales/{sale_id}")["accepted_orders"] == 3


@pytest.mark.parametrize(
    "case",
    ["unknown-secret", "expired", "other-user", "other-sale", "no-sub", "garbage"],
)
def test_a_bad_shopper_token_is_401_invalid_shopper_token(env: ServiceEnv, case: str) -> None:
    sale_id = sale(env)
    user = "shopper-1"
    token = {
        "unknown-secret": shopper_token(user, sale_id, "x" * 40),
        "expired": shopper_token(user, sale_id, ttl_s=-60),  # past the 5 s leeway
        "other-user": shopper_token("shopper-2", sale_id),
        "other-sale": shopper_token(user, "another-sale"),
        "no-sub": jwt.encode({"sale": sale_id, "exp": int(time.time()) + 60}, NEW_SECRET),
        "garbage": "not.a.token",
    }[case]
    answer = order(env, token, sale_id, user)
    assert (answer.status, answer.body["error"]) == (401, "invalid_shopper_token"), answer.body
    assert "invalid_token" in answer.headers["WWW-Authenticate"]
    assert admin_json(env, "GET", f"/admin/v1/sales/{sale_id}")["skus"]["A"]["remaining"] == 100


def test_without_any_token_the_answer_is_401_unauthorized(env: ServiceEnv) -> None:
    sale_id = sale(env)
    answer = order(env, None, sale_id, "u1")
    assert (answer.status, answer.body["error"]) == (401, "unauthorized")


def test_minted_user_ids_buy_nothing_past_per_user_max(env: ServiceEnv) -> None:
    sale_id = sale(env, per_user_max=1)
    token = shopper_token("bot", sale_id)
    assert order(env, token, sale_id, "bot").status == 202
    again = order(env, token, sale_id, "bot")
    assert (again.status, again.body["error"]) == (409, "purchase_limit")
    # The bot invents user ids; its token vouches for one shopper only.
    for minted in ("bot-2", "bot-3", "bot-4"):
        answer = order(env, token, sale_id, minted)
        assert (answer.status, answer.body["error"]) == (401, "invalid_shopper_token")
    report = admin_json(env, "GET", f"/admin/v1/sales/{sale_id}")
    assert report["accepted_units"] == 1


def test_idempotency_keys_are_each_shoppers_own(env: ServiceEnv) -> None:
    sale_id = sale(env)
    key = {"Idempotency-Key": f"key-{uuid.uuid4().hex}"}
    first = order(env, shopper_token("alice", sale_id), sale_id, "alice", headers=key)
    replay = order(env, shopper_token("alice", sale_id), sale_id, "alice", headers=key)
    other = order(env, shopper_token("bob", sale_id), sale_id, "bob", headers=key)
    assert (first.status, replay.status, other.status) == (202, 202, 202)
    assert replay.body["order_id"] == first.body["order_id"]
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert other.body["order_id"] != first.body["order_id"]  # bob's key, bob's order


def test_a_browser_preflight_from_the_storefront_origin_is_allowed(env: ServiceEnv) -> None:
    async def body(client: Client) -> tuple[Answer, Answer]:
        headers = {
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,idempotency-key",
        }
        allowed = await client.call("OPTIONS", "/v1/orders", headers=headers)
        foreign = await client.call(
            "OPTIONS", "/v1/orders", headers={**headers, "Origin": "https://evil.example"}
        )
        return allowed, foreign

    allowed, foreign = as_caller(env, None, body)
    assert allowed.status == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "idempotency-key" in allowed.headers["Access-Control-Allow-Headers"].lower()
    assert foreign.status == 400 and "Access-Control-Allow-Origin" not in foreign.headers


def test_verification_rules_without_a_server() -> None:
    tokens = ShopperTokens([Secret(NEW_SECRET), Secret(OLD_SECRET)])
    assert tokens.verify(shopper_token("u", "s", OLD_SECRET)) == Shopper("u", "s")
    with pytest.raises(InvalidShopperToken, match="expired"):
        tokens.verify(shopper_token("u", "s", ttl_s=-60))
    # Within the leeway, a storefront clock a little ahead is forgiven.
    assert tokens.verify(shopper_token("u", "s", ttl_s=-2)).user_id == "u"
    none_alg = jwt.encode({"sub": "u", "sale": "s", "exp": int(time.time()) + 60}, None, "none")
    with pytest.raises(InvalidShopperToken):
        tokens.verify(none_alg)
    with pytest.raises(ValueError, match="32 bytes"):
        ShopperTokens([Secret("short")])
    assert "n" * 32 not in repr(Secret(NEW_SECRET))

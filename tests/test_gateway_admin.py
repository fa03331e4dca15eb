"""The admin listener: its token, sales, drain control and the order's queue position."""

from __future__ import annotations

import asyncio
import json
import stat
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis

from flashgate.drain.control import DrainControl
from flashgate.drain.progress import ConsumerReport, publish
from flashgate.redis_client import create_redis
from flashgate.settings import load_settings
from gateway.admin.token import ensure_admin_token
from tests.gateway_client import Client
from tests.services import Services, load_sale


def _call(url: str, method: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    data = (
        None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    )
    request = urllib.request.Request(url, data=data, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_token_is_generated_once_with_mode_600(tmp_path: Path) -> None:
    settings = load_settings(environ={"FLASHGATE_STACK_STATE_DIR": str(tmp_path / "state")})
    token = ensure_admin_token(settings)
    path = tmp_path / "state" / "admin-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(token) >= 40 and ensure_admin_token(settings) == token
    path.chmod(0o644)
    assert ensure_admin_token(settings) == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    from_env = load_settings(
        environ={"FLASHGATE_STACK_STATE_DIR": str(tmp_path / "x"), "FLASHGATE_ADMIN_TOKEN": "t"}
    )
    assert ensure_admin_token(from_env) == "t"
    assert not (tmp_path / "x").exists()


def test_admin_api(services: Services) -> None:
    gateway = services.start_gateway()
    env = services.env
    base = env.admin_url
    token = env.admin_token()  # generated into the state dir: no FLASHGATE_ADMIN_TOKEN here
    token_file = Path(env.variables["FLASHGATE_STACK_STATE_DIR"]) / "admin-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    sale_url = f"{base}/admin/v1/sales/s1"

    for bad in (None, "wrong", token + "x"):
        assert _call(sale_url, "GET", token=bad) == (
            401,
            {"error": "unauthorized", "message": "a valid bearer token is required"},
        )
    # The public listener does not serve admin routes.
    assert _call(f"{env.gateway_url}/admin/v1/sales/s1", "GET", token=token)[0] == 404

    assert _call(sale_url, "GET", token=token)[1]["error"] == "unknown_sale"
    invalid: list[Any] = [
        {},
        {"stock": {}},
        {"stock": {"A": -1}},
        {"stock": {"bad sku": 1}},
        {"stock": {"A": 1}, "per_order_max": 0},
        {"stock": {"A": 1}, "rates": {"user": {"per_second": 1, "burst": 0}}},
        {"stock": {"A": 1}, "surprise": True},
    ]
    for body in invalid:
        status, answer = _call(sale_url, "PUT", body, token)
        assert (status, answer["error"]) == (422, "validation_error"), body
        assert answer["details"]
    assert _call(sale_url, "PUT", b"{nope", token)[1]["error"] == "invalid_json"
    assert _call(f"{base}/admin/v1/sales/bad%20id", "PUT", {"stock": {"A": 1}}, token)[0] == 422

    status, report = _call(
        sale_url,
        "PUT",
        {
            "stock": {"A": 5, "B": 1},
            "per_user_max": 2,
            "rates": {"ip": {"per_second": 50, "burst": 60}},
        },
        token,
    )
    assert status == 200
    assert report["per_order_max"] == 10  # from [sales] defaults
    assert report["rates"]["ip"] == {"per_second": 50.0, "burst": 60}
    assert report["rates"]["user"] == {"per_second": 1.0, "burst": 3}

    async def buy() -> int:
        async with Client(env.gateway_url) as client:
            answer = await client.order(sale_id="s1", quantity=2)
            return answer.status

    assert asyncio.run(buy()) == 202
    report = _call(sale_url, "GET", token=token)[1]
    assert report["skus"]["A"] == {"loaded": 5, "remaining": 3, "reserved": 0, "accepted": 2}
    assert (report["accepted_orders"], report["delivered_orders"]) == (1, 0)

    drain_url = f"{base}/admin/v1/drain"
    state = _call(drain_url, "GET", token=token)[1]
    assert set(state) >= {
        "configured_rate", "override_rate", "effective_rate", "paused", "reason",
        "schedule", "backlog", "delivered_per_second", "eta_seconds",
    }  # fmt: skip
    assert (state["override_rate"], state["paused"]) == (None, False)
    assert _call(drain_url, "PUT", {"rate": 250}, token)[1]["override_rate"] == 250.0
    paused = _call(drain_url, "PUT", {"paused": True}, token)[1]
    assert (paused["paused"], paused["effective_rate"]) == (True, 0.0)
    back = _call(drain_url, "PUT", {"rate": None, "paused": False}, token)[1]
    assert (back["override_rate"], back["paused"]) == (None, False)
    for body in ({}, {"rate": -1}, {"rate": "fast"}, {"pause": True}):
        assert _call(drain_url, "PUT", body, token)[0] == 422, body
    assert _call(drain_url, "PUT", None, None)[0] == 401

    # The override is what consumers read.
    async def override() -> tuple[float | None, bool]:
        client = create_redis(env.settings.redis)
        try:
            current = await DrainControl(client, env.settings.drain.group_id).get()
            return current.rate, current.paused
        finally:
            await client.aclose()

    assert asyncio.run(override()) == (None, False)
    audit = [line for line in gateway.log_tail(200).splitlines() if "flashgate.audit" in line]
    assert len(audit) == 4, audit  # one sale load, three drain changes
    assert token not in gateway.log_tail(400)


def test_order_position_and_eta_from_drain_progress(services: Services) -> None:
    services.start_gateway()
    env = services.env
    load_sale(env, "s1", {"stock": {"A": 100}})

    async def scenario() -> dict[str, Any]:
        async with Client(env.gateway_url) as client:
            ids = [
                (await client.order(sale_id="s1", user_id=f"u{i}")).body["order_id"]
                for i in range(3)
            ]
            status = await client.call("GET", f"/v1/orders/{ids[-1]}")
            assert "position" not in status.body  # no consumer has reported progress
            redis_client = create_redis(env.settings.redis)
            try:
                raw = await redis_client.hgetall(f"order:{ids[-1]}")
                partition, offset = int(raw[b"partition"]), int(raw[b"offset"])
                report = ConsumerReport(
                    consumer_id="c1", configured_rate=10.0, override_rate=None,
                    effective_rate=10.0, paused=False, reason="schedule", schedule="all day",
                    delivered_per_second=10.0, updated_at=time.time(),
                )  # fmt: skip
                partitions = {p: (0, 0) for p in range(6)}
                partitions[partition] = (max(0, offset - 1), offset + 1)
                await publish(redis_client, env.settings.drain.group_id, report, partitions)
            finally:
                await redis_client.aclose()
            status = await client.call("GET", f"/v1/orders/{ids[-1]}")
            body: dict[str, Any] = status.body
            body["expected_position"] = (offset - max(0, offset - 1)) * 6
            return body

    body = asyncio.run(scenario())
    assert body["status"] == "accepted"
    assert body["position"] == body["expected_position"]
    assert body["eta_seconds"] == pytest.approx(body["position"] / 10.0)


def test_redis_client_fixture_is_flushed(services: Services) -> None:
    # Sales loaded by earlier tests are gone: each test starts from an empty Redis.
    client = redis.Redis.from_url(services.env.settings.redis.url)
    try:
        assert client.dbsize() == 0
    finally:
        client.close()

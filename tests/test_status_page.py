"""The shoppers' order status page in headless Chromium, on a real gateway, drain, Kafka and
Redis: it shows an accepted order's place in line, and turns to "placed" by itself once
the drain delivers it, with the page left open; an order the backend refuses shows as
not placed, and why.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from pathlib import Path

from flashgate.ids import new_order_id
from tests.browser import open_page
from tests.services import (
    Services,
    admin_json,
    http_json,
    load_sale,
    wait_drain_paused,
    wait_until,
)

PAGE_BYTES_MAX = 8 * 1024  # "no more than a few KB": the page and its script together
STATUS = "document.querySelector('[data-flashgate-order]').getAttribute('data-status')"
TITLE = "document.querySelector('.fg-status').textContent"
LINE = "document.querySelector('.fg-line').textContent"
DETAIL = "document.querySelector('.fg-status').nextSibling.textContent"


def _get(url: str) -> tuple[int, bytes, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read(), response.headers["Content-Type"]


def test_the_page_follows_an_order_from_accepted_to_placed(
    services: Services, tmp_path: Path
) -> None:
    env = services.env
    services.start_backend("--reject-attribute", "refuse-me")
    services.start_consumer()
    services.start_gateway()
    load_sale(env, "sale-page", {"stock": {"A": 100}, "per_user_max": 0})
    admin_json(env, "PUT", "/admin/v1/drain", {"paused": True})
    assert wait_drain_paused(env)
    ahead = [
        http_json("POST", f"{env.gateway_url}/v1/orders",
                  {"sale_id": "sale-page", "sku": "A", "quantity": 1, "user_id": f"u{i}"})
        for i in range(4)
    ]  # fmt: skip
    order_id = ahead[-1]["order_id"]
    refused = http_json(
        "POST", f"{env.gateway_url}/v1/orders",
        {"sale_id": "sale-page", "sku": "A", "quantity": 1, "user_id": "u-refused",
         "attributes": {"refuse-me": "yes"}},
    )["order_id"]  # fmt: skip

    status, page, kind = _get(f"{env.gateway_url}/orders/{order_id}")
    assert status == 200 and kind.startswith("text/html") and order_id.encode() in page
    _, script, kind = _get(f"{env.gateway_url}/order-status.js")
    assert kind.startswith("text/javascript")
    assert len(page) + len(script) <= PAGE_BYTES_MAX

    async def watch() -> None:
        async with open_page(f"{env.gateway_url}/orders/{order_id}", tmp_path / "p") as tab:
            assert await tab.wait_for(f"{STATUS} === 'accepted'", 20), await tab.evaluate(STATUS)
            assert await tab.evaluate(TITLE) == "Order received"
            line = await tab.wait_for(LINE, 10)
            assert "ahead" in line or "Next in line" in line, line
            # Readable on a phone: nothing wider than its 390 px screen.
            await tab.emulate_phone(390)
            assert await tab.wait_for("window.innerWidth === 390", 5)
            assert await tab.evaluate("document.documentElement.scrollWidth") <= 390

            admin_json(env, "PUT", "/admin/v1/drain", {"paused": False})
            assert await tab.wait_for(f"{STATUS} === 'delivered'", 30), await tab.evaluate(STATUS)
            assert await tab.evaluate(TITLE) == "Order placed"
            assert await tab.evaluate(LINE) == ""

        async with open_page(f"{env.gateway_url}/orders/{refused}", tmp_path / "r") as tab:
            assert await tab.wait_for(f"{STATUS} === 'failed'", 30), await tab.evaluate(STATUS)
            assert await tab.evaluate(TITLE) == "Order not placed"
            assert await tab.evaluate(
                "document.querySelector('.fg-status').nextSibling.textContent"
            )

        unknown = new_order_id()
        async with open_page(f"{env.gateway_url}/orders/{unknown}", tmp_path / "q") as tab:
            assert await tab.wait_for(f"{STATUS} === 'unknown'", 20)
            assert await tab.evaluate(TITLE) == "Order not found"

    asyncio.run(watch())
    assert wait_until(lambda: http_json("GET", f"{env.backend_url}/stats")["orders"] == 4, 15)


def test_the_page_writes_only_an_order_id_into_itself(services: Services) -> None:
    services.start_gateway()
    for bad in ("<script>alert(1)</script>", "not-an-id", "..%2F..%2Fetc"):
        try:
            status = _get(f"{services.env.gateway_url}/orders/{bad}")[0]
        except urllib.error.HTTPError as refused:
            status = refused.code
        assert status == 404, bad

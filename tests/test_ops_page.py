"""The live ops page in headless Chromium during a small burst: backlog shown, then drained.

Chromium is Debian's (`make test` installs it); the page is read back with
--dump-dom after its scripts ran, and screenshots are kept in the test's tmp dir.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path

import aiohttp

from tests.services import (
    Services,
    admin_json,
    http_json,
    load_sale,
    wait_drain_paused,
    wait_until,
)

ORDERS = 300
CHROMIUM_TIMEOUT_S = 60


def _chromium(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    assert binary, "chromium is missing: `make test` installs it (flashgate prepare --tools)"
    return subprocess.run(
        [
            binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=4000",
            "--window-size=1280,1400", *extra, url,
        ],
        capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S, check=False,
    )  # fmt: skip


def _read_page(url: str, tmp_path: Path, name: str) -> dict[str, str]:
    profile = tmp_path / f"profile-{name}"
    dom = _chromium(url, profile, "--dump-dom").stdout
    _chromium(url, tmp_path / f"profile-{name}-shot", f"--screenshot={tmp_path / name}.png")
    values = {}
    for element in ("backlog", "eta", "rate", "reason", "dlq", "conn"):
        match = re.search(rf'id="{element}"[^>]*>([^<]*)<', dom)
        values[element] = match.group(1).strip() if match else ""
    values["stock_rows"] = str(dom.count('<td class="num">'))
    values["states"] = " | ".join(re.findall(r'<td class="state">([^<]*)<', dom))
    return values


async def _post_orders(base_url: str, count: int) -> list[int]:
    async with aiohttp.ClientSession() as session:

        async def post(i: int) -> int:
            order = {"sale_id": "sale-ops", "sku": f"SKU-{i % 2}", "quantity": 1,
                     "user_id": f"u-{i}"}  # fmt: skip
            async with session.post(f"{base_url}/v1/orders", json=order) as response:
                return response.status

        return await asyncio.gather(*(post(i) for i in range(count)))


def test_ops_page_shows_the_backlog_then_the_drain(services: Services, tmp_path: Path) -> None:
    env = services.env
    services.start_backend()
    services.start_consumer()
    services.start_gateway()
    load_sale(env, "sale-ops", {"stock": {"SKU-0": 1000, "SKU-1": 1000}, "per_user_max": 0})
    # Loaded a day ahead: the page counts down to its opening.
    load_sale(env, "sale-tomorrow", {"stock": {"SKU-0": 5}, "opens_at": "2099-01-01T00:00:00Z"})
    admin_json(env, "PUT", "/admin/v1/drain", {"paused": True})
    assert wait_drain_paused(env)
    assert asyncio.run(_post_orders(env.gateway_url, ORDERS)) == [202] * ORDERS
    assert wait_until(lambda: admin_json(env, "GET", "/admin/v1/drain")["backlog"] == ORDERS, 15), (
        admin_json(env, "GET", "/admin/v1/drain")
    )

    url = f"{env.admin_url}/ops/#token={env.admin_token()}"
    during = _read_page(url, tmp_path, "ops-paused")
    assert during["conn"] == "live", during
    assert during["backlog"].replace(",", "") == str(ORDERS), during
    assert during["rate"] == "paused", during
    assert int(during["stock_rows"]) == 3, during
    assert re.search(r"scheduled, opens in \d+d ", during["states"]), during
    assert "open" in during["states"].split(" | "), during
    assert (tmp_path / "ops-paused.png").stat().st_size > 10_000

    admin_json(env, "PUT", "/admin/v1/drain", {"paused": False})
    assert wait_until(lambda: http_json("GET", f"{env.backend_url}/stats")["orders"] == ORDERS, 30)
    assert wait_until(lambda: admin_json(env, "GET", "/admin/v1/drain")["backlog"] == 0, 15)
    after = _read_page(url, tmp_path, "ops-drained")
    assert after["backlog"] == "0", after
    assert after["eta"] == "empty", after
    assert after["dlq"] == "0", after
    assert (tmp_path / "ops-drained.png").stat().st_size > 10_000


def test_ops_page_needs_no_token_to_load_but_its_data_does(services: Services) -> None:
    env = services.env
    services.start_gateway()
    page = http_json_raw(f"{env.admin_url}/ops/")
    assert page.startswith(b"<!doctype html>")
    status = http_status(f"{env.admin_url}/admin/v1/overview")
    assert status == 401


def http_json_raw(url: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
        return body


def http_status(url: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code

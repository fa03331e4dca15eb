"""The Locust sale scenario runs headless against a real gateway, ends by itself, and buys."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from tests.services import Services, admin_json, load_sale

REPO = Path(__file__).resolve().parent.parent


def test_headless_sale_run(services: Services, tmp_path: Path) -> None:
    env = services.env
    services.start_backend()
    services.start_consumer()
    services.start_gateway()
    load_sale(env, "sale-1", {"stock": {"SKU-1": 20, "SKU-2": 20}, "per_user_max": 1})
    result = subprocess.run(
        [
            sys.executable, "-m", "locust", "-f", str(REPO / "loadtest" / "locustfile.py"),
            "--host", env.gateway_url, "--headless", "--csv", str(tmp_path / "sale"),
            "--sale-id", "sale-1", "--skus", "SKU-1,SKU-2",
            "--idle-users", "2", "--idle-seconds", "1",
            "--spike-users", "60", "--spike-seconds", "4",
            "--tail-users", "2", "--tail-seconds", "1", "--sale-spawn-rate", "60",
            "--poll-status", "false", "--stop-timeout", "5",
        ],
        capture_output=True, text=True, timeout=90, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "sale_stats.csv") as stats_file:
        rows = {row["Name"]: row for row in csv.DictReader(stats_file)}
    # Every run ends with the generator's verdict; a saturated one is also a row of
    # the summary, next to the latencies it spoils.
    verdicts = [line for line in result.stdout.splitlines() if line.startswith("generator: ")]
    assert len(verdicts) == 1, result.stdout[-2000:]
    saturated = "generator CPU saturated" in rows
    assert verdicts[0].startswith("generator: SATURATED") == saturated, verdicts
    assert ("response times include Locust's own queueing" in verdicts[0]) == saturated
    posts = rows["POST /v1/orders"]
    assert int(posts["Request Count"]) >= 40
    assert int(posts["Failure Count"]) == 0
    # The sale sold out: exactly the stock was accepted, the rest were told sold_out.
    sale = admin_json(env, "GET", "/admin/v1/sales/sale-1")
    assert sale["accepted_orders"] == 40
    assert all(sku["remaining"] == 0 for sku in sale["skus"].values())


def test_a_scheduled_opening_keeps_early_shoppers_waiting(
    services: Services, tmp_path: Path
) -> None:
    """--open-at-spike: the sale opens when the spike starts; the idle shoppers before it
    are told sale_not_open, wait, and buy once it opens; nothing is sold before."""
    env = services.env
    services.start_gateway()
    load_sale(env, "sale-2", {"stock": {"SKU-1": 30}, "per_user_max": 1})
    result = subprocess.run(
        [
            sys.executable, "-m", "locust", "-f", str(REPO / "loadtest" / "locustfile.py"),
            "--host", env.gateway_url, "--headless", "--csv", str(tmp_path / "sale"),
            "--sale-id", "sale-2", "--skus", "SKU-1",
            "--idle-users", "5", "--idle-seconds", "3",
            "--spike-users", "40", "--spike-seconds", "4",
            "--tail-users", "1", "--tail-seconds", "1", "--sale-spawn-rate", "40",
            "--poll-status", "false", "--stop-timeout", "5",
            "--open-at-spike", "true", "--admin-url", env.admin_url,
            "--admin-token", env.admin_token(),
        ],
        capture_output=True, text=True, timeout=90, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sale sale-2 opens at " in result.stdout
    with open(tmp_path / "sale_stats.csv") as stats_file:
        rows = {row["Name"]: row for row in csv.DictReader(stats_file)}
    assert int(rows["sale_not_open"]["Request Count"]) >= 5, rows.keys()
    assert int(rows["POST /v1/orders"]["Failure Count"]) == 0
    sale = admin_json(env, "GET", "/admin/v1/sales/sale-2")
    assert sale["state"] in ("open", "sold_out") and sale["opens_at"] is not None
    assert sale["accepted_orders"] == 30  # the early shoppers and the spike bought it out

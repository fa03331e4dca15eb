"""The `flashgate` command against a real running stack: sale, drain, status, dlq."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.services import (
    ServiceEnv,
    Services,
    admin_json,
    http_json,
    wait_drain_paused,
    wait_until,
)


def _flashgate(env: ServiceEnv, *args: str) -> subprocess.CompletedProcess[str]:
    variables = {k: v for k, v in os.environ.items() if not k.startswith("FLASHGATE_")}
    variables.update(env.variables)
    variables["COLUMNS"] = "160"
    return subprocess.run(
        [sys.executable, "-m", "flashgate", *args],
        capture_output=True, text=True, timeout=60, env=variables, check=False,
    )  # fmt: skip


def test_sale_drain_status_and_dlq_commands(services: Services, tmp_path: Path) -> None:
    env = services.env
    services.start_backend()
    services.start_consumer()
    services.start_gateway()

    sale_file = tmp_path / "sale.toml"
    sale_file.write_text('sale_id = "cli-sale"\nper_user_max = 1\n[stock]\nSKU-1 = 7\n')
    loaded = _flashgate(env, "sale", "load", str(sale_file))
    assert loaded.returncode == 0, loaded.stderr
    assert "loaded sale cli-sale" in loaded.stdout
    shown = _flashgate(env, "sale", "show", "cli-sale")
    assert shown.returncode == 0, shown.stderr
    assert "SKU-1" in shown.stdout and "7" in shown.stdout
    assert "cli-sale: open" in shown.stdout
    # A sale loaded ahead, its opening as a TOML date-time: shown with its countdown.
    ahead = tmp_path / "ahead.toml"
    ahead.write_text(
        'sale_id = "cli-ahead"\nopens_at = 2099-01-01T09:00:00+01:00\n[stock]\nA = 1\n'
    )
    assert _flashgate(env, "sale", "load", str(ahead)).returncode == 0
    shown = _flashgate(env, "sale", "show", "cli-ahead")
    assert "scheduled, opens at 2099-01-01T08:00:00.000Z (in " in shown.stdout, shown.stdout

    paused = _flashgate(env, "drain", "--pause")
    assert paused.returncode == 0, paused.stderr
    assert "paused" in paused.stdout
    assert admin_json(env, "GET", "/admin/v1/drain")["paused"] is True
    assert wait_drain_paused(env)

    order = {"sale_id": "cli-sale", "sku": "SKU-1", "quantity": 1, "user_id": "u-1"}
    http_json("POST", f"{env.gateway_url}/v1/orders", order)
    assert wait_until(lambda: admin_json(env, "GET", "/admin/v1/drain")["backlog"] == 1, 15)
    status = _flashgate(env, "status")
    assert status.returncode == 0, status.stderr
    assert "backlog" in status.stdout and "1 orders" in status.stdout

    rate = _flashgate(env, "drain", "--rate", "50")
    assert rate.returncode == 0, rate.stderr
    assert admin_json(env, "GET", "/admin/v1/drain")["override_rate"] == 50
    resumed = _flashgate(env, "drain", "--reset")
    assert resumed.returncode == 0, resumed.stderr
    drain = admin_json(env, "GET", "/admin/v1/drain")
    assert (drain["paused"], drain["override_rate"]) == (False, None)
    assert wait_until(lambda: http_json("GET", f"{env.backend_url}/stats")["orders"] == 1, 20)

    watched = _flashgate(env, "status", "--watch", "--seconds", "2")
    assert watched.returncode == 0, watched.stderr
    assert "effective rate" in watched.stdout

    letters = _flashgate(env, "dlq", "list", "--json")
    assert letters.returncode == 0, letters.stderr
    assert [json.loads(line) for line in letters.stdout.splitlines() if line.strip()] == []


def test_admin_commands_with_a_wrong_token_are_refused(services: Services) -> None:
    env = services.env
    services.start_gateway()
    env.variables["FLASHGATE_ADMIN_TOKEN"] = "not-the-token"
    try:
        result = _flashgate(env, "drain", "--pause")
    finally:
        del env.variables["FLASHGATE_ADMIN_TOKEN"]
    assert result.returncode == 1
    assert "401" in result.stderr
    assert "not-the-token" not in result.stderr

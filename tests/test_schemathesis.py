"""Schemathesis against the gateway's own /openapi.json: at least 10,000 generated requests.

Positive and negative cases from the document; the checks are that no answer is
a 5xx and every status is one the document lists. The gateway's own request
counter (/metrics) proves how many requests it answered, and that none was a 5xx.
"""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.services import Services, load_sale

MIN_REQUESTS = 10_000


def _answered(metrics_url: str) -> dict[str, float]:
    """Requests answered by the gateway, per status, from its Prometheus counter."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    by_status: dict[str, float] = {}
    for match in re.finditer(
        r"^flashgate_gateway_requests_total\{([^}]*)\} ([0-9.e+]+)$", text, re.MULTILINE
    ):
        status = re.search(r'status="(\d+)"', match.group(1))
        if status:
            by_status[status.group(1)] = by_status.get(status.group(1), 0) + float(match.group(2))
    return by_status


@pytest.mark.timeout(600)
def test_generated_requests_never_get_a_5xx(services: Services, tmp_path: Path) -> None:
    env = services.env
    services.start_gateway()
    unlimited = {"per_second": 0, "burst": 1}
    load_sale(
        env,
        "sale-1",
        {"stock": {"SKU-1": 1_000_000}, "rates": {"sale": unlimited, "user": unlimited,
                                                    "ip": unlimited}},
    )  # fmt: skip
    before = _answered(f"{env.gateway_url}/metrics")
    result = subprocess.run(
        [
            sys.executable, "-m", "schemathesis.cli", "run", f"{env.gateway_url}/openapi.json",
            "--checks", "not_a_server_error,status_code_conformance",
            "--phases", "examples,coverage,fuzzing", "--mode", "all",
            "--max-examples", "10000", "--workers", "4", "--seed", "20261124",
            "--no-shrink", "--request-timeout", "10", "--generation-database", "none",
            "--report", "junit", "--report-dir", str(tmp_path),
        ],
        capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path,
    )  # fmt: skip
    after = _answered(f"{env.gateway_url}/metrics")
    answered = {s: after.get(s, 0) - before.get(s, 0) for s in after}
    total = sum(answered.values())
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert total >= MIN_REQUESTS, (total, answered, result.stdout[-2000:])
    assert not [s for s, n in answered.items() if s.startswith("5") and n], answered

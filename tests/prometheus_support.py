"""Debian's Prometheus and promtool for the tests: find them, run one Prometheus, ask it.

`make test-tools` installs them (`flashgate prepare --tools prometheus promtool`).
The Prometheus started here listens on 127.0.0.1 only, keeps its data in a test
folder, and is stopped even when a test fails.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from flashgate.stack.debian import find_command
from flashgate.stack.ports import free_port
from flashgate.stack.process import ManagedProcess
from tests.deploy_support import COMPOSE_DIR
from tests.services import wait_until

ALERTS = COMPOSE_DIR / "prometheus" / "alerts.yml"
ALERTS_TEST = COMPOSE_DIR / "prometheus" / "alerts_test.yml"
START_TIMEOUT_S = 30.0


def tool(command: str) -> str:
    found = find_command(command)
    assert found, f"{command} is missing: `make test-tools` installs it (Debian's prometheus)"
    return found


@contextmanager
def running_prometheus(root: Path, targets: list[str], *, interval_s: float) -> Iterator[str]:
    """Prometheus scraping `targets` (host:port) as job `gateway`, with the shipped rules.

    The generated configuration differs from the compose one only in what a test
    must change: static loopback targets instead of Docker's DNS, and short scrape
    and evaluation intervals. The rules file is the shipped one, unchanged.
    """
    interval = f"{int(interval_s * 1000)}ms"
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [{"job_name": "gateway", "static_configs": [{"targets": targets}]}],
    }
    root.mkdir(parents=True, exist_ok=True)
    config_path = root / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    process = ManagedProcess(
        "prometheus",
        [
            tool("prometheus"),
            f"--config.file={config_path}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        log_path=root / "prometheus.log",
    )
    process.start()
    try:
        url = f"http://127.0.0.1:{port}"
        # The port opens before the storage is; the API answers 503 until /-/ready does not.
        if not wait_until(lambda: _ready(url), START_TIMEOUT_S):
            raise RuntimeError(f"prometheus did not get ready:\n{process.log_tail(40)}")
        yield url
    finally:
        process.stop(timeout_s=10)


def _ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/-/ready", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def api(base_url: str, path: str) -> Any:
    with urllib.request.urlopen(f"{base_url}{path}", timeout=5) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]


def alerts(base_url: str) -> list[dict[str, Any]]:
    """Every alert Prometheus holds now, pending or firing."""
    data: list[dict[str, Any]] = api(base_url, "/api/v1/alerts")["alerts"]
    return data

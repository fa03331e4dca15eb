"""`flashgate up` keeps the stack up: one gateway worker per usable CPU on the public
port, and a SIGKILLed consumer, Redis or gateway worker comes back by itself,
counted in `flashgate status`; SIGTERM still stops everything."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from flashgate.cpus import usable_cpus
from flashgate.settings import load_settings
from tests.services import http_json, wait_until
from tests.test_local_stack import _descendants, _kill_up, _post, _request, _stack_env


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _record(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def test_up_restarts_what_dies_and_counts_it(tmp_path: Path, kafka_libs: Path) -> None:
    env = _stack_env(tmp_path)
    settings = load_settings(environ=env)
    run = tmp_path / "state" / "run"
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115 - closed in finally
    up = subprocess.Popen(
        [sys.executable, "-m", "flashgate", "up"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        ready = wait_until(lambda: b"flashgate is up" in (tmp_path / "up.log").read_bytes(), 120)
        assert ready, (tmp_path / "up.log").read_text()
        # workers = 0 (the default): one gateway worker per usable CPU.
        cpus = usable_cpus()
        assert wait_until(lambda: len(_record(run / "gateway-workers.json")) == cpus, 30), cpus
        assert f"({cpus} worker" in (tmp_path / "up.log").read_text()

        gateway = f"http://{settings.gateway.host}:{settings.gateway.port}"
        token = (tmp_path / "state" / "admin-token").read_text().strip()
        admin = f"http://{settings.admin.host}:{settings.admin.port}"
        backend = settings.drain.backend_url
        _request("PUT", f"{admin}/admin/v1/sales/sale-1", {"stock": {"SKU-1": 10}}, token)

        def order_goes_through(user: str, delivered: int) -> None:
            order = {"sale_id": "sale-1", "sku": "SKU-1", "quantity": 1, "user_id": user}
            assert _post(f"{gateway}/v1/orders", order)["status"] == "accepted"
            assert wait_until(
                lambda: http_json("GET", f"{backend}/stats")["orders"] == delivered, 60
            )

        order_goes_through("u-1", 1)

        # SIGKILL the consumer, Redis and Kafka, as a crash would.
        # name in the stack's record -> its pid file
        names = {"consumer": "consumer", "redis": "redis", "kafka-1": "kafka"}
        victims = {name: int((run / f"{file}.pid").read_text()) for name, file in names.items()}
        for pid in victims.values():
            os.kill(pid, signal.SIGKILL)

        def back() -> bool:
            stack = _record(run / "stack.json")
            return all(
                stack[name]["restarts"] == 1
                and stack[name]["pid"] != pid
                and _alive(stack[name]["pid"])
                for name, pid in victims.items()
            )

        assert wait_until(back, 60), _record(run / "stack.json")
        assert up.poll() is None
        text = (tmp_path / "up.log").read_text()
        assert "consumer exited with -9; restarting in" in text
        assert "redis exited with -9; restarting in" in text
        assert "kafka-1 exited with -9; restarting in" in text

        # Redis kept its data (AOF): the sale is still there, and orders flow again
        # through the restarted Redis and consumer. The gateway may answer 503 for
        # the moment its connections reconnect: retry until accepted.
        def accepted(user: str) -> bool:
            try:
                order = {"sale_id": "sale-1", "sku": "SKU-1", "quantity": 1, "user_id": user}
                return _post(f"{gateway}/v1/orders", order)["status"] == "accepted"
            except OSError:
                return False

        assert wait_until(lambda: accepted("u-2"), 90)
        assert wait_until(lambda: http_json("GET", f"{backend}/stats")["orders"] == 2, 60)

        # What issue 16 tried: `kill -9` of the gateway. Its workers follow it (they
        # die with their supervisor), and the stack starts a new gateway.
        old_gateway = int((run / "gateway.pid").read_text())
        os.kill(old_gateway, signal.SIGKILL)

        def gateway_back() -> bool:
            child = _record(run / "stack.json")["gateway"]
            return bool(child["restarts"] == 1 and _alive(child["pid"]))

        assert wait_until(gateway_back, 30), _record(run / "stack.json")
        assert wait_until(lambda: accepted("u-3"), 60)
        assert wait_until(lambda: http_json("GET", f"{backend}/stats")["orders"] == 3, 60)

        # `flashgate status` shows the restarts. (The admin API answers 503 once for
        # each pooled connection Redis' restart left stale: it does not retry.)
        def status() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "flashgate", "status"],
                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip

        shown: list[subprocess.CompletedProcess[str]] = []

        def status_answers() -> bool:
            shown.append(status())
            return shown[-1].returncode == 0

        assert wait_until(status_answers, 30), shown[-1].stderr
        rows = {line.split()[0]: line.split() for line in shown[-1].stdout.splitlines() if line}
        assert rows["consumer"][2] == "1" and rows["redis"][2] == "1", shown[-1].stdout
        assert rows["gateway"][2] == "1", shown[-1].stdout
        assert "gateway-worker-0" in rows, shown[-1].stdout

        children = _descendants(up.pid)
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=90) == 0
        assert wait_until(lambda: not any(_alive(pid) for pid in children), 10)
        assert not (run / "stack.json").exists()
    finally:
        _kill_up(up)
        log.close()

"""`flashgate up` as a user runs it: the whole stack up, one order through, clean stop.

It runs on free ports (never the `make up` defaults) through FLASHGATE_* variables.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from flashgate.admission.keys import SaleKeys
from flashgate.errors import PortInUse
from flashgate.settings import load_settings
from flashgate.stack.local import LocalStack
from flashgate.stack.ports import ensure_free, free_port
from flashgate.stack.redis_cluster import RedisClusterNodes
from flashgate.stack.redis_tls import ensure_tls_files
from tests.services import http_json, wait_until

REPO = Path(__file__).resolve().parent.parent


def _stack_env(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "flashgate.toml"
    config.write_text("")
    backend_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHGATE_")}
    env.update(
        {
            "FLASHGATE_CONFIG": str(config),
            "FLASHGATE_GATEWAY_PORT": str(free_port()),
            "FLASHGATE_ADMIN_PORT": str(free_port()),
            "FLASHGATE_BACKEND_PORT": str(backend_port),
            "FLASHGATE_DRAIN_BACKEND_URL": f"http://127.0.0.1:{backend_port}",
            "FLASHGATE_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "FLASHGATE_STACK_KAFKA_CONTROLLER_PORT": str(free_port()),
            "FLASHGATE_STACK_KAFKA_HEAP_MB": "384",
            "FLASHGATE_STACK_KAFKA_LIBS_DIR": str(REPO / ".cache" / "kafka-4.3.1"),
            "FLASHGATE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
            "FLASHGATE_STACK_STATE_DIR": str(tmp_path / "state"),
        }
    )
    return env


def _descendants(pid: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            ppid = next(
                int(line.split()[1])
                for line in status.read_text().splitlines()
                if line.startswith("PPid:")
            )
        except (OSError, StopIteration, ValueError):
            continue
        if ppid == pid:
            child = int(status.parent.name)
            found += [child, *_descendants(child)]
    return found


# Above its own bounds (up 120 s, stored 30 s, delivered 10 s, the second up 60 s, the
# stop 60 s): the project's global limit is shorter.
def _alive(pids: list[int]) -> list[int]:
    """Those of `pids` still running."""
    return [pid for pid in pids if Path(f"/proc/{pid}").exists()]


@pytest.mark.timeout(120 + 30 + 10 + 60 + 60 + 60)
def test_up_serves_an_order_and_stops_cleanly(tmp_path: Path, kafka_libs: Path) -> None:
    env = _stack_env(tmp_path)
    settings = load_settings(environ=env)
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115 - closed in finally
    up = subprocess.Popen(
        [sys.executable, "-m", "flashgate", "up"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        ready = wait_until(lambda: b"flashgate is up" in (tmp_path / "up.log").read_bytes(), 120)
        assert ready, (tmp_path / "up.log").read_text()
        children = _descendants(up.pid)
        assert len(children) >= 5  # redis, kafka, backend, consumer, gateway

        gateway = f"http://{settings.gateway.host}:{settings.gateway.port}"
        token = (tmp_path / "state" / "admin-token").read_text().strip()
        admin = f"http://{settings.admin.host}:{settings.admin.port}"
        _request("PUT", f"{admin}/admin/v1/sales/sale-1", {"stock": {"SKU-1": 10}}, token)
        order = {"sale_id": "sale-1", "sku": "SKU-1", "quantity": 1, "user_id": "u-1"}
        answer = _post(f"{gateway}/v1/orders", order)
        assert answer["status"] == "accepted"
        backend = settings.drain.backend_url
        assert wait_until(lambda: http_json("GET", f"{backend}/stats")["orders"] == 1, 30)
        assert wait_until(
            lambda: (
                http_json("GET", f"{gateway}/v1/orders/{answer['order_id']}")["status"]
                == "delivered"
            ),
            10,
        )

        # A second `up` on the same ports refuses, naming the port.
        second = subprocess.run(
            [sys.executable, "-m", "flashgate", "up"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode == 1
        assert "already in use" in second.stderr
        assert settings.redis.url.split("://", 1)[1].split("/", 1)[0] in second.stderr

        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=60) == 0
        assert wait_until(lambda: not _alive(children), 10), _alive(children)
        assert not list((tmp_path / "state" / "run").glob("*.pid"))
    finally:
        _kill_up(up)
        log.close()


def _kill_up(up: subprocess.Popen[bytes]) -> None:
    """After a failure: SIGKILL `flashgate up` and whatever it started (a child stuck
    in its own shutdown, its Kafka and Redis gone at once, would outlive the test)."""
    if up.poll() is not None:
        return
    children = _descendants(up.pid)
    up.kill()
    up.wait(timeout=30)
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _request(method: str, url: str, body: object, token: str | None = None) -> object:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _post(url: str, body: object) -> dict[str, str]:
    result = _request("POST", url, body)
    assert isinstance(result, dict)
    return result


def test_a_taken_port_is_named(tmp_path: Path) -> None:
    env = _stack_env(tmp_path)
    settings = load_settings(environ=env)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", settings.gateway.port))
        holder.listen()
        with pytest.raises(PortInUse) as caught:
            LocalStack(settings).check_ports()
    assert caught.value.port == settings.gateway.port
    assert f"127.0.0.1:{settings.gateway.port}" in str(caught.value)
    assert "gateway" in str(caught.value)


def _free_run(count: int, offsets: tuple[int, ...] = (0, 10_000)) -> int:
    """A base port with `count` consecutive free ports (and their cluster-bus twins)."""
    for base in range(21_000, 45_000, 97):
        ports = [base + i + offset for i in range(count) for offset in offsets]
        try:
            for port in ports:
                ensure_free("probe", "127.0.0.1", port)
        except PortInUse:
            continue
        return base
    raise AssertionError("no run of free ports")


# Above its own bounds (up 150 s, stored 30 s, the stop 60 s).
@pytest.mark.timeout(150 + 30 + 60 + 60)
def test_up_with_a_redis_cluster_over_tls(tmp_path: Path, kafka_libs: Path) -> None:
    """`make up` with FLASHGATE_STACK_REDIS=cluster FLASHGATE_STACK_REDIS_TLS=1: the
    order goes end to end and the sale's keys live on a cluster primary."""
    env = _stack_env(tmp_path)
    base = _free_run(6)
    env["FLASHGATE_REDIS_URL"] = f"redis://127.0.0.1:{base}/0"
    settings = load_settings(environ=env)
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115 - closed in finally
    up = subprocess.Popen(
        [sys.executable, "-m", "flashgate", "up", "--redis", "cluster", "--redis-tls"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        ready = wait_until(lambda: b"flashgate is up" in (tmp_path / "up.log").read_bytes(), 150)
        assert ready, (tmp_path / "up.log").read_text()
        assert b"(cluster, 3 primaries + 3 replicas)" in (tmp_path / "up.log").read_bytes()
        children = _descendants(up.pid)
        gateway = f"http://{settings.gateway.host}:{settings.gateway.port}"
        token = (tmp_path / "state" / "admin-token").read_text().strip()
        admin = f"http://{settings.admin.host}:{settings.admin.port}"
        _request("PUT", f"{admin}/admin/v1/sales/sale-1", {"stock": {"SKU-1": 10}}, token)
        order = {"sale_id": "sale-1", "sku": "SKU-1", "quantity": 1, "user_id": "u-1"}
        assert _post(f"{gateway}/v1/orders", order)["status"] == "accepted"
        backend = settings.drain.backend_url
        assert wait_until(lambda: http_json("GET", f"{backend}/stats")["orders"] == 1, 30)
        # The plaintext port is off; over TLS the sale's stock key is on a primary.
        files = ensure_tls_files(tmp_path / "state" / "redis-tls")
        nodes = RedisClusterNodes(
            [base + i for i in range(6)], [], tmp_path, tls_cli_args=files.cli_args
        )
        primary = nodes.primary_of(SaleKeys.of("sale-1").core[0])
        role = nodes.cli(primary, "ROLE").split()[0]
        assert (primary in nodes.ports, role) == (True, "master")
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=60) == 0
        assert wait_until(lambda: not _alive(children), 10), _alive(children)
    finally:
        _kill_up(up)
        log.close()

"""Test helpers that run flashgate's real processes (gateway, consumer, reference backend).

Processes get their settings the way production does: FLASHGATE_* variables.
Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flashgate.kafka.topics import ensure_topics
from flashgate.settings import Settings, load_settings
from flashgate.stack.kafka_broker import BrokerSpec, KafkaBroker, new_cluster_id
from flashgate.stack.ports import free_port, wait_for_port
from flashgate.stack.process import ManagedProcess

START_TIMEOUT_S = 30.0
TEST_BROKER_HEAP_MB = 384


@contextmanager
def running_broker(kafka_libs: Path, data_dir: Path) -> Iterator[KafkaBroker]:
    """A single-node KRaft broker on free ports, stopped on exit even after a failure."""
    broker = KafkaBroker(
        BrokerSpec(1, free_port(), free_port()),
        data_dir=data_dir,
        libs_dir=kafka_libs,
        heap_mb=TEST_BROKER_HEAP_MB,
        cluster_id=new_cluster_id(kafka_libs),
        # Retention checked every second (not 5 minutes), so a test topic of short
        # retention loses its old records within the test (tests/test_buffer_*.py).
        overrides={"log.retention.check.interval.ms": "1000", "log.initial.task.delay.ms": "0"},
    )
    broker.format_storage()
    broker.start(data_dir / "broker.log")
    try:
        broker.wait_listening(90)
        yield broker
    finally:
        broker.stop()


@dataclass
class ServiceEnv:
    root: Path
    variables: dict[str, str]

    @classmethod
    def create(
        cls,
        root: Path,
        *,
        bootstrap: str,
        redis_url: str,
        orders_topic: str,
        dlq_topic: str,
        group_id: str,
    ) -> ServiceEnv:
        config = root / "flashgate.toml"
        config.write_text("")
        gateway_port, backend_port = free_port(), free_port()
        variables = {
            "FLASHGATE_CONFIG": str(config),
            "FLASHGATE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "FLASHGATE_KAFKA_ORDERS_TOPIC": orders_topic,
            "FLASHGATE_KAFKA_DLQ_TOPIC": dlq_topic,
            "FLASHGATE_KAFKA_PARTITIONS": "6",
            "FLASHGATE_REDIS_URL": redis_url,
            "FLASHGATE_GATEWAY_PORT": str(gateway_port),
            "FLASHGATE_ADMIN_PORT": str(free_port()),
            "FLASHGATE_BACKEND_PORT": str(backend_port),
            "FLASHGATE_DRAIN_BACKEND_URL": f"http://127.0.0.1:{backend_port}",
            "FLASHGATE_DRAIN_GROUP_ID": group_id,
            "FLASHGATE_DRAIN_RATE_PER_S": "5000",
            "FLASHGATE_DRAIN_BURST": "500",
            "FLASHGATE_STACK_STATE_DIR": str(root / "state"),
            # One process, as these tests were written for; tests of several workers
            # override it.
            "FLASHGATE_GATEWAY_WORKERS": "1",
            # These tests send hundreds of requests at once to one gateway on a shared
            # machine and check what admission answers; shedding by loop lag would answer
            # some of them 503 instead. tests/test_flash_crowd.py turns it on.
            "FLASHGATE_GATEWAY_SHED_LAG_MS": "0",
        }
        return cls(root, variables)

    @property
    def settings(self) -> Settings:
        return load_settings(environ=self.variables)

    def process_env(self, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHGATE_")}
        env.update(self.variables)
        env.update(overrides)
        return env

    def create_topics(self) -> None:
        ensure_topics(self.settings.kafka)

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.variables['FLASHGATE_GATEWAY_PORT']}"

    @property
    def backend_url(self) -> str:
        return self.variables["FLASHGATE_DRAIN_BACKEND_URL"]

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.variables['FLASHGATE_ADMIN_PORT']}"

    def admin_token(self) -> str:
        """FLASHGATE_ADMIN_TOKEN if set, else the token the gateway generated."""
        token = self.variables.get("FLASHGATE_ADMIN_TOKEN")
        if token:
            return token
        return (
            (Path(self.variables["FLASHGATE_STACK_STATE_DIR"]) / "admin-token").read_text().strip()
        )


@dataclass
class Services:
    env: ServiceEnv
    running: list[ManagedProcess] = field(default_factory=list)

    def _start(
        self, name: str, argv: list[str], port: int | None, env: dict[str, str]
    ) -> ManagedProcess:
        process = ManagedProcess(
            name, argv, log_path=self.env.root / f"{name}-{len(self.running)}.log", env=env
        )
        process.start()
        self.running.append(process)
        if port is not None:
            try:
                wait_for_port(name, "127.0.0.1", port, START_TIMEOUT_S)
            except Exception as exc:
                raise RuntimeError(f"{name} did not start:\n{process.log_tail(40)}") from exc
        return process

    def start_backend(self, *extra_args: str) -> ManagedProcess:
        port = int(self.env.variables["FLASHGATE_BACKEND_PORT"])
        argv = [
            sys.executable, "-m", "reference_backend",
            "--port", str(port), "--db", str(self.env.root / "backend.sqlite3"),
            "--rate", "0", *extra_args,
        ]  # fmt: skip
        return self._start("backend", argv, port, self.env.process_env())

    def start_gateway(self, **overrides: str) -> ManagedProcess:
        port = int(
            overrides.get("FLASHGATE_GATEWAY_PORT", self.env.variables["FLASHGATE_GATEWAY_PORT"])
        )
        argv = [sys.executable, "-m", "gateway.main"]
        return self._start("gateway", argv, port, self.env.process_env(**overrides))

    def start_consumer(self, **overrides: str) -> ManagedProcess:
        argv = [sys.executable, "-m", "order_consumer.main"]
        return self._start("consumer", argv, None, self.env.process_env(**overrides))

    def stop_all(self) -> None:
        for process in reversed(self.running):
            process.stop(timeout_s=20)
        self.running.clear()


def http_json(method: str, url: str, body: Any = None, timeout_s: float = 10.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())


def admin_json(env: ServiceEnv, method: str, path: str, body: Any = None) -> Any:
    """Call the gateway's admin API with the admin token."""
    port = int(env.variables["FLASHGATE_ADMIN_PORT"])
    wait_for_port("admin", "127.0.0.1", port, START_TIMEOUT_S)
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{env.admin_url}{path}", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {env.admin_token()}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def wait_drain_paused(env: ServiceEnv, timeout_s: float = 10.0) -> bool:
    """True once a consumer reports the pause (it applies overrides within a second)."""

    def applied() -> bool:
        drain = admin_json(env, "GET", "/admin/v1/drain")
        return bool(drain["consumers"] >= 1 and drain["effective_rate"] == 0)

    return wait_until(applied, timeout_s)


def load_sale(env: ServiceEnv, sale_id: str, body: dict[str, Any]) -> Any:
    """Load (or reload) a sale through the admin API: `PUT /admin/v1/sales/{sale_id}`."""
    return admin_json(env, "PUT", f"/admin/v1/sales/{sale_id}", body)


def wait_until(predicate: Any, timeout_s: float, interval_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())

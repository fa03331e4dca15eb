"""`flashgate up`: bring the whole local stack up, watch it, and take it down cleanly.

Order: Redis, Kafka (format once, start, await readiness, create topics), the
reference backend, the order consumer, the gateway. While up, it supervises them
(`flashgate.supervisor`): a part that dies is restarted with backoff and a line
on the terminal, and its restarts are counted in `<state>/run/stack.json` (shown
by `flashgate status`). On Ctrl-C or SIGTERM, or when a part keeps crashing,
everything stops in reverse order and no process is left.

`stack.kafka_security` (FLASHGATE_STACK_KAFKA_SECURITY=sasl_ssl or mtls) secures
the broker's client listener: TLS material and passwords are made once in
`<state>/kafka-tls/`, the broker keeps its data apart (`<state>/kafka-<mode>/`,
as its SCRAM users are made when the storage is formatted), and every process
the stack starts gets the FLASHGATE_KAFKA_* settings to connect.

`stack.backend_mode` (FLASHGATE_STACK_BACKEND_MODE) starts the reference backend as
a real order service would be (bearer, oauth2, tls, refuse-40x, reject; see
local_backend.py), and gives the consumer the matching FLASHGATE_DRAIN_* settings.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import msgspec

from flashgate.cpus import resolve_count
from flashgate.errors import CrashLoop, StackError
from flashgate.kafka.topics import ensure_topics, wait_for_broker
from flashgate.settings import Settings
from flashgate.stack.kafka_broker import BrokerSpec, KafkaBroker, new_cluster_id
from flashgate.stack.kafka_jars import ensure_kafka_jars
from flashgate.stack.kafka_security import BrokerSecurity
from flashgate.stack.local_backend import backend_mode
from flashgate.stack.local_redis import start_local_redis
from flashgate.stack.ports import ensure_free, wait_for_port
from flashgate.stack.process import ManagedProcess
from flashgate.stack.redis_server import ensure_redis_installed
from flashgate.supervisor import Supervisor, stop_on_signals

log = logging.getLogger(__name__)

KAFKA_READY_S = 90.0
SERVICE_READY_S = 30.0


def kafka_libs_dir(settings: Settings) -> Path:
    return Path(settings.stack.kafka_libs_dir).resolve()


def prepare(settings: Settings) -> None:
    """Install and fetch what the stack needs (idempotent): Redis and Kafka's jars."""
    ensure_redis_installed()
    ensure_kafka_jars(kafka_libs_dir(settings))


def _host_port(bootstrap: str) -> tuple[str, int]:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    return host, int(port)


def _redis_port(url: str) -> int:
    authority = url.split("://", 1)[-1].split("/", 1)[0]
    return int(authority.rpartition(":")[2] or 6379)


class LocalStack:
    def __init__(
        self,
        settings: Settings,
        say: Callable[[str], None] = print,
        *,
        redis_topology: str = "standalone",
        redis_tls: bool = False,
    ) -> None:
        self.settings = settings
        self.redis_topology = redis_topology
        self.redis_tls = redis_tls
        self.state = settings.state_dir.resolve()
        self.say = say
        self.supervisor = Supervisor(record=self.state / "run" / "stack.json", say=say)
        self._stop = threading.Event()
        # The environment of every process started: FLASHGATE_REDIS_* of a local
        # Cluster, Sentinel or TLS Redis, and secured Kafka's FLASHGATE_KAFKA_*.
        self.env: dict[str, str] = dict(os.environ)

    def _log(self, name: str) -> Path:
        return self.state / "logs" / f"{name}.log"

    def _pid(self, name: str) -> Path:
        return self.state / "run" / f"{name}.pid"

    def check_ports(self) -> None:
        s = self.settings
        _, kafka_port = _host_port(s.kafka.bootstrap_servers)
        for name, host, port in [
            ("Redis", "127.0.0.1", _redis_port(s.redis.url)),
            ("Kafka broker", "127.0.0.1", kafka_port),
            ("Kafka controller", "127.0.0.1", s.stack.kafka_controller_port),
            ("reference backend", s.backend.host, s.backend.port),
            ("gateway", s.gateway.host, s.gateway.port),
            ("gateway admin", s.admin.host, s.admin.port),
        ]:
            ensure_free(name, host, port)

    def start(self) -> None:
        s = self.settings
        self.check_ports()
        prepare(s)
        redis = start_local_redis(
            self.redis_topology,
            self.redis_tls,
            _redis_port(s.redis.url),
            self.state,
            self._log,
            self._pid,
        )
        for process in redis.processes:
            self._own(process)
        self.env |= redis.client_env
        self.say(f"redis      {redis.summary}")

        _, kafka_port = _host_port(s.kafka.bootstrap_servers)
        libs = kafka_libs_dir(s)
        security = self._kafka_security()
        broker = KafkaBroker(
            BrokerSpec(1, kafka_port, s.stack.kafka_controller_port),
            data_dir=self.state / ("kafka" if security is None else f"kafka-{security.mode}"),
            libs_dir=libs,
            heap_mb=s.stack.kafka_heap_mb,
            cluster_id=self._cluster_id(libs),
            security=security,
        )
        broker.format_storage()
        broker.start(self._log("kafka"), self._pid("kafka"))
        self._own(broker.process)
        broker.wait_listening(KAFKA_READY_S)
        kafka = self._client_settings(security).kafka
        wait_for_broker(kafka, KAFKA_READY_S)
        ensure_topics(kafka)
        self.say(
            f"kafka      {s.kafka.bootstrap_servers}  topics {s.kafka.orders_topic}, "
            f"{s.kafka.dlq_topic}"
        )
        if security is not None:
            self.say(f"           {security.describe()}")

        python = sys.executable
        mode = backend_mode(s.stack.backend_mode, self.state, s.backend.host, s.backend.port)
        self.env |= mode.drain_env
        backend = ManagedProcess(
            "backend",
            [
                python,
                "-m",
                "reference_backend",
                "--host",
                s.backend.host,
                "--port",
                str(s.backend.port),
                "--db",
                str(self.state / "backend" / "orders.sqlite3"),
                "--rate",
                str(s.backend.rate_per_s),
                "--concurrency",
                str(s.backend.concurrency),
                *mode.args,
            ],
            log_path=self._log("backend"),
            pid_path=self._pid("backend"),
            env=self.env,
        )
        self._launch(backend, s.backend.host, s.backend.port)
        self.say(
            f"backend    {mode.scheme}://{s.backend.host}:{s.backend.port}/stats"
            f"  (mode {s.stack.backend_mode})"
        )

        consumer = ManagedProcess(
            "consumer",
            [python, "-m", "order_consumer.main"],
            log_path=self._log("consumer"),
            pid_path=self._pid("consumer"),
            env=self.env,
        )
        consumer.start()
        self._own(consumer)
        processes = resolve_count(s.drain.processes)
        self.say(
            f"consumer   group {s.drain.group_id} at {s.drain.rate_per_s:g}/s"
            + (f" ({processes} processes)" if processes > 1 else "")
        )

        gateway = ManagedProcess(
            "gateway",
            [python, "-m", "gateway.main"],
            log_path=self._log("gateway"),
            pid_path=self._pid("gateway"),
            env=self.env,
        )
        self._launch(gateway, s.gateway.host, s.gateway.port)
        workers = resolve_count(s.gateway.workers)
        self.say(
            f"gateway    http://{s.gateway.host}:{s.gateway.port}/v1/orders  "
            f"({workers} worker{'s' if workers > 1 else ''})"
        )
        token_hint = "FLASHGATE_ADMIN_TOKEN" if s.admin.token else str(self.state / "admin-token")
        self.say(
            f"admin      http://{s.admin.host}:{s.admin.port}/admin/v1/drain  (token: {token_hint})"
        )
        self.say(f"ops page   http://{s.admin.host}:{s.admin.port}/ops/")
        self.say(f"logs       {self.state / 'logs'}")

    def _kafka_security(self) -> BrokerSecurity | None:
        mode = self.settings.stack.kafka_security
        if mode == "plaintext":
            return None
        return BrokerSecurity.prepare(mode, self.state / "kafka-tls")

    def _client_settings(self, security: BrokerSecurity | None) -> Settings:
        """The settings of every process, secured Kafka's FLASHGATE_KAFKA_* included."""
        if security is None:
            return self.settings
        self.env.update(security.client_variables())
        kafka = security.kafka_settings(self.settings.kafka)
        return msgspec.structs.replace(self.settings, kafka=kafka)

    def _cluster_id(self, libs: Path) -> str:
        path = self.state / "kafka-cluster-id"
        if path.is_file():
            return path.read_text().strip()
        cluster_id = new_cluster_id(libs)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(cluster_id + "\n")
        return cluster_id

    @property
    def parts(self) -> list[ManagedProcess]:
        return self.supervisor.processes

    def _own(self, process: ManagedProcess | None) -> None:
        if process is not None:
            self.supervisor.add(process)

    def _launch(self, process: ManagedProcess, host: str, port: int) -> None:
        process.start()
        self._own(process)
        try:
            wait_for_port(process.name, host, port, SERVICE_READY_S)
        except StackError:
            raise StackError(
                f"{process.name} did not start; last lines of {process.log_path}:\n"
                + process.log_tail()
            ) from None

    def watch(self) -> str:
        """Restart parts that die until a signal arrives or one keeps crashing; return why."""
        reason = stop_on_signals(self._stop)
        try:
            self.supervisor.run(self._stop)
        except CrashLoop as exc:
            return str(exc)
        return reason[0] if reason else "stopped"

    def stop(self) -> None:
        # The gateway drains for up to 15 s, then flushes its producer for up to 10 s.
        self.supervisor.stop_in_order(timeout_s=45.0)


def run_local_stack(
    settings: Settings, *, redis_topology: str = "standalone", redis_tls: bool = False
) -> int:
    stack = LocalStack(settings, redis_topology=redis_topology, redis_tls=redis_tls)
    try:
        stack.start()
        print("flashgate is up; Ctrl-C stops everything.", flush=True)
        why = stack.watch()
        print(f"stopping ({why}) ...", flush=True)
        return 0
    except StackError as exc:
        print(f"flashgate up: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()

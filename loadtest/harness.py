"""What the benchmarks start: Redis, one Kafka broker and flashgate processes on free
loopback ports, under a temporary directory, all stopped on exit.

With `plaintext_beside=True` a secured broker also keeps a PLAINTEXT listener on a
port of its own, so one run measures a plaintext and a secured client side by side
on the same broker, Redis and topic (`variables(listener="plaintext")`).

Used by b1_admission.py and b5_produce.py, so each is one self-contained command.
The broker and Redis are started the same way as the test fixtures start them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Any, cast

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from flashgate.kafka.topics import ensure_topics, wait_for_broker  # noqa: E402
from flashgate.settings import load_settings  # noqa: E402
from flashgate.stack.kafka_broker import BrokerSpec, KafkaBroker, new_cluster_id  # noqa: E402
from flashgate.stack.kafka_jars import ensure_kafka_jars  # noqa: E402
from flashgate.stack.kafka_security import BrokerSecurity, Mode  # noqa: E402
from flashgate.stack.ports import free_port, wait_for_port  # noqa: E402
from flashgate.stack.process import ManagedProcess  # noqa: E402
from flashgate.stack.redis_cluster import RedisClusterNodes  # noqa: E402
from flashgate.stack.redis_server import RedisServer  # noqa: E402

ADMIN_TOKEN = "loadtest-admin-token"


def repo_relative(arg: str) -> str:
    """An absolute path as a saved result shows it: relative to the repository when
    inside it, else its name alone, so results name no directory of one machine."""
    path = Path(arg)
    if not path.is_absolute():
        return arg
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return path.name


def command_line(module: str) -> str:
    """This run's command for its summary: `python -m <module> <args>`."""
    return " ".join(["python", "-m", module, *(repo_relative(a) for a in sys.argv[1:])])


class Stack(AbstractContextManager["Stack"]):
    def __init__(
        self,
        *,
        kafka: bool = True,
        partitions: int = 6,
        keep: bool = False,
        kafka_security: str = "plaintext",
        plaintext_beside: bool = False,
    ) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="flashgate-bench-"))
        self.keep = keep
        self.with_kafka = kafka
        # "sasl_ssl" or "mtls": the broker's client listener, and every client, secured.
        self.security: BrokerSecurity | None = None
        if kafka_security in ("sasl_ssl", "mtls"):
            mode = cast(Mode, kafka_security)
            self.security = BrokerSecurity.prepare(mode, self.root / "kafka-tls")
        elif kafka_security != "plaintext":
            raise ValueError(f"unknown Kafka security {kafka_security!r}")
        if plaintext_beside and self.security is None:
            raise ValueError("plaintext_beside needs a secured broker (sasl_ssl or mtls)")
        self.plaintext_port = free_port() if plaintext_beside else None
        self.partitions = partitions
        self.redis: RedisServer | None = None
        self.broker: KafkaBroker | None = None
        self.processes: list[ManagedProcess] = []
        self.topic = f"orders-{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> Stack:
        try:
            self.redis = RedisServer(free_port(), self.root / "redis", appendonly=False)
            self.redis.start(self.root / "redis.log")
            self.redis.wait_listening()
            if self.with_kafka:
                libs = ensure_kafka_jars(REPO / ".cache" / "kafka-4.3.1")
                self.broker = KafkaBroker(
                    BrokerSpec(1, free_port(), free_port()),
                    data_dir=self.root / "kafka",
                    libs_dir=libs,
                    heap_mb=512,
                    cluster_id=new_cluster_id(libs),
                    security=self.security,
                )
                if self.plaintext_port is not None:
                    self.broker.overrides = _plaintext_listener(self.broker, self.plaintext_port)
                self.broker.format_storage()
                self.broker.start(self.root / "kafka.log")
                self.broker.wait_listening(90)
                settings = load_settings(environ=self.variables())
                wait_for_broker(settings.kafka, 90)
                ensure_topics(settings.kafka)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        for process in reversed(self.processes):
            process.stop(timeout_s=20)
        self.processes.clear()
        if self.broker is not None:
            self.broker.stop()
        if self.redis is not None:
            self.redis.stop()
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap if self.broker else "127.0.0.1:1"

    def variables(self, *, listener: str = "", **overrides: str) -> dict[str, str]:
        """A flashgate process's settings; `listener="plaintext"` connects it to the
        PLAINTEXT listener of a `plaintext_beside` broker instead of the secured one."""
        assert self.redis is not None
        plaintext = listener == "plaintext"
        if plaintext and self.plaintext_port is None:
            raise ValueError("this broker has no PLAINTEXT listener beside its secured one")
        if listener not in ("", "plaintext"):
            raise ValueError(f"unknown listener {listener!r}")
        config = self.root / "flashgate.toml"
        config.touch()
        bootstrap = f"127.0.0.1:{self.plaintext_port}" if plaintext else self.bootstrap
        variables = {
            "FLASHGATE_CONFIG": str(config),
            "FLASHGATE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "FLASHGATE_KAFKA_ORDERS_TOPIC": self.topic,
            "FLASHGATE_KAFKA_DLQ_TOPIC": self.topic + ".dlq",
            "FLASHGATE_KAFKA_PARTITIONS": str(self.partitions),
            "FLASHGATE_REDIS_URL": self.redis.url,
            "FLASHGATE_ADMIN_TOKEN": ADMIN_TOKEN,
            "FLASHGATE_STACK_STATE_DIR": str(self.root / "state"),
            # One process, what B1-B5 measure (B6 sets more); older checkouts know it too.
            "FLASHGATE_GATEWAY_WORKERS": "1",
        }
        if self.security is not None and not plaintext:
            variables.update(self.security.client_variables())
        variables.update(overrides)
        return variables

    def start(
        self,
        name: str,
        argv: list[str],
        port: int,
        *,
        cwd: Path = REPO,
        listener: str = "",
        **overrides: str,
    ) -> ManagedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHGATE_")}
        env.update(self.variables(listener=listener, **overrides))
        process = ManagedProcess(
            name, argv, log_path=self.root / f"{name}-{len(self.processes)}.log", env=env, cwd=cwd
        )
        process.start()
        self.processes.append(process)
        try:
            wait_for_port(name, "127.0.0.1", port, 30)
        except Exception as exc:
            raise RuntimeError(f"{name} did not start:\n{process.log_tail(40)}") from exc
        return process

    def start_gateway(
        self, *, tree: Path = REPO, listener: str = "", **overrides: str
    ) -> tuple[ManagedProcess, int, int]:
        """A gateway from `tree` (another checkout of flashgate, to compare commits)."""
        port, admin_port = free_port(), free_port()
        process = self.start(
            "gateway",
            [sys.executable, "-m", "gateway.main"],
            port,
            cwd=tree,
            listener=listener,
            FLASHGATE_GATEWAY_PORT=str(port),
            FLASHGATE_ADMIN_PORT=str(admin_port),
            **overrides,
        )
        wait_for_port("admin", "127.0.0.1", admin_port, 30)
        return process, port, admin_port

    def stop(self, process: ManagedProcess) -> None:
        process.stop(timeout_s=20)
        self.processes.remove(process)


def _plaintext_listener(broker: KafkaBroker, port: int) -> dict[str, str]:
    """Broker properties adding a PLAINTEXT client listener on `port` to a secured broker
    (the secured one stays the inter-broker listener)."""
    props = broker.properties()
    address = f"127.0.0.1:{port}"
    return {
        "listeners": f"{props['listeners']},PLAINTEXT://{address}",
        "advertised.listeners": f"{props['advertised.listeners']},PLAINTEXT://{address}",
        "listener.security.protocol.map": (
            f"{props['listener.security.protocol.map']},PLAINTEXT:PLAINTEXT"
        ),
    }


def load_sale(admin_port: int, sale_id: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{admin_port}/admin/v1/sales/{sale_id}",
        data=json.dumps(body).encode(),
        method="PUT",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def wrk(url: str, *, script: Path, seconds: float, connections: int = 64, threads: int = 1,
        env: dict[str, str] | None = None, prefix: list[str] | None = None,
        timeout_s: float | None = None) -> dict[str, Any]:  # fmt: skip
    """Run wrk with a Lua script that prints one JSON line of results; return it.
    `prefix` runs it under another command (`taskset -c 1`); `timeout_s` is how long
    wrk waits for an answer before counting a timeout (wrk's own default: 2 s)."""
    command = [
        *(prefix or []), "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency",
        *([f"--timeout={timeout_s:g}s"] if timeout_s else []), "-s", str(script), url,
    ]  # fmt: skip
    started = time.monotonic()
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=False,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    for line in result.stdout.splitlines():
        if line.startswith("{"):
            summary: dict[str, Any] = json.loads(line)
            summary["wall_s"] = round(time.monotonic() - started, 2)
            return summary
    raise RuntimeError(f"wrk printed no summary:\n{result.stdout}\n{result.stderr}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_pids(pid: int) -> list[int]:
    """`pid` and every descendant of it (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def pin_tree(pid: int, cpus: set[int]) -> None:
    """Every thread of `pid` and of its descendants onto `cpus`. Each thread has its own
    mask (the JVM's were made before this call), and a thread or process made later
    inherits its creator's."""
    for member in tree_pids(pid):
        for task in Path(f"/proc/{member}/task").glob("[0-9]*"):
            with contextlib.suppress(OSError):  # gone between the listing and the call
                os.sched_setaffinity(int(task.name), cpus)


@contextlib.contextmanager
def redis_cluster(data_dir: Path) -> Iterator[RedisClusterNodes]:
    """A local Redis Cluster (3 primaries, 3 replicas) on free ports, stopped on exit."""
    nodes = RedisClusterNodes(
        [free_port() for _ in range(6)], [free_port() for _ in range(6)], data_dir
    )
    try:
        nodes.start(data_dir / "logs")
        yield nodes
    finally:
        nodes.stop()

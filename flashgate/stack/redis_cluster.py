"""A local Redis Cluster from Debian's redis-server: N primaries with one replica each.

Each node is a `RedisServer` in its own data dir with cluster mode on; the
cluster is formed by `redis-cli --cluster create` and is ready once every node
reports `cluster_state:ok` with all 16,384 slots served. A low node timeout
makes a replica take over within seconds of its primary's death (tests, chaos).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from flashgate.errors import StackError
from flashgate.stack.redis_server import HOST, RedisServer

CLUSTER_SLOTS = 16384
NODE_TIMEOUT_MS = 2000
READY_TIMEOUT_S = 60.0


@dataclass
class RedisClusterNodes:
    """`ports[i]` serves clients, `bus_ports[i]` the cluster bus of the same node."""

    ports: list[int]
    bus_ports: list[int]
    data_dir: Path
    replicas: int = 1
    node_timeout_ms: int = NODE_TIMEOUT_MS
    # TLS: the nodes' options (tls-port, certificates) and redis-cli's (--tls, --cacert).
    tls_server_args: Callable[[int], list[str]] | None = None
    tls_cli_args: list[str] = field(default_factory=list)
    servers: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        """A seed node: a cluster client learns the rest from it."""
        scheme = "rediss" if self.tls_server_args else "redis"
        return f"{scheme}://{HOST}:{self.ports[0]}/0"

    def start(self, log_dir: Path, pid_dir: Path | None = None) -> None:
        """Start every node and form the cluster (a stopped one restarts as it was)."""
        for index, (port, bus) in enumerate(zip(self.ports, self.bus_ports, strict=True)):
            options = [
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-port", str(bus),
                "--cluster-node-timeout", str(self.node_timeout_ms),
                # One shard's failover must not stop the sales of the others.
                "--cluster-require-full-coverage", "no",
                # A replica's first sync starts at once, not after the default 5 s.
                "--repl-diskless-sync-delay", "0",
            ]  # fmt: skip
            if self.tls_server_args is not None:
                options += self.tls_server_args(port)
            server = RedisServer(port, self.data_dir / f"node-{index}", extra_args=options)
            pid_path = pid_dir / f"redis-{index}.pid" if pid_dir is not None else None
            server.start(log_dir / f"redis-{index}.log", pid_path)
            self.servers.append(server)
        for server in self.servers:
            server.wait_listening()
        if not self._formed():
            self._create()
        self.wait_ready()

    def _formed(self) -> bool:
        info = self.cli(self.ports[0], "CLUSTER", "INFO").split()
        return "cluster_known_nodes:1" not in info

    def _create(self) -> None:
        nodes = [f"{HOST}:{port}" for port in self.ports]
        self._run(
            ["--cluster", "create", *nodes, "--cluster-replicas", str(self.replicas),
             "--cluster-yes"]
        )  # fmt: skip

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Every live node serves all slots and agrees the cluster is ok."""
        live = [s.port for s in self.servers if s.process is not None and s.process.running()]
        wait_until(lambda: all(self.slots_ok(port) for port in live), timeout_s, "Redis Cluster")
        # Replicas past their first sync: until then a WAIT counts none of them.
        wait_until(self.replicas_linked, timeout_s, "Redis Cluster replicas")

    def replicas_linked(self) -> bool:
        """Every primary serving slots streams to its replicas (first sync done)."""
        for port in self.primaries():
            info = self.cli(port, "INFO", "replication").split()
            online = [line for line in info if line.startswith("slave") and "state=online" in line]
            if len(online) < self.replicas:
                return False
        return True

    def primaries(self) -> list[int]:
        """Ports of the primaries that serve slots now."""
        ports = []
        for line in self.cli(self.live_port(), "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "master" in fields[2] and "fail" not in fields[2] and len(fields) > 8:
                ports.append(int(fields[1].split("@")[0].rsplit(":", 1)[1]))
        return ports

    def slots_ok(self, port: int) -> bool:
        try:
            info = self.cli(port, "CLUSTER", "INFO")
        except StackError:
            return False
        lines = info.split()
        return "cluster_state:ok" in lines and f"cluster_slots_ok:{CLUSTER_SLOTS}" in lines

    def primary_of(self, key: str) -> int:
        """The port of the primary serving `key`'s slot now."""
        slot = self.cli(self.live_port(), "CLUSTER", "KEYSLOT", key).strip()
        for line in self.cli(self.live_port(), "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            for span in fields[8:]:
                low, _, high = span.partition("-")
                if low.isdigit() and int(low) <= int(slot) <= int(high or low):
                    return int(fields[1].split("@")[0].rsplit(":", 1)[1])
        raise StackError(f"no primary serves slot {slot}")

    def move_slot(self, slot: int, to_port: int, key_pause_s: float = 0.0) -> None:
        """Move one slot to the primary on `to_port` the way resharding does: mark it
        importing and migrating, MIGRATE its keys one by one (`key_pause_s` apart, so
        clients meet ASK and TRYAGAIN meanwhile), then assign it on every primary."""
        from_port = next(port for port in self.primaries() if self._serves(port, slot))
        if from_port == to_port:
            return
        source, target = (
            self.cli(port, "CLUSTER", "MYID").strip() for port in (from_port, to_port)
        )
        self.cli(to_port, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", source)
        self.cli(from_port, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", target)
        while keys := self.cli(from_port, "CLUSTER", "GETKEYSINSLOT", str(slot), "10").split():
            for key in keys:
                self.cli(from_port, "MIGRATE", HOST, str(to_port), key, "0", "5000")
                time.sleep(key_pause_s)
        for port in self.primaries():
            self.cli(port, "CLUSTER", "SETSLOT", str(slot), "NODE", target)

    def _serves(self, port: int, slot: int) -> bool:
        for line in self.cli(port, "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "myself" not in fields[2]:
                continue
            for span in fields[8:]:
                low, _, high = span.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    return True
        return False

    def live_port(self) -> int:
        """A node whose process runs (the first one may be the one a test killed); the
        first port for a cluster this object did not start."""
        if not self.servers:
            return self.ports[0]
        for server in self.servers:
            if server.process is not None and server.process.running():
                return server.port
        raise StackError("no Redis Cluster node is running")

    def cli(self, port: int, *command: str) -> str:
        return self._run(["-p", str(port), *command])

    def _run(self, args: list[str]) -> str:
        # --cluster commands take no -p; single commands go through the same path.
        binary = shutil.which("redis-cli") or "redis-cli"
        done = subprocess.run(
            [binary, "-h", HOST, *self.tls_cli_args, *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0 or done.stdout.startswith(("ERR", "Could not connect")):
            raise StackError(f"redis-cli {' '.join(args)}: {done.stdout}{done.stderr}".strip())
        return done.stdout

    def stop(self, timeout_s: float = 10.0) -> None:
        for server in self.servers:
            server.stop(timeout_s)


def wait_until(ready: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise StackError(f"{what} not ready within {timeout_s:.0f}s")
        time.sleep(0.1)

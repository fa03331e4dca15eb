"""A local Sentinel setup from Debian's redis-server: a primary, a replica, 3 sentinels.

The sentinels watch the primary under one name; quorum 2 and a 1 s down-after
let a test kill the primary and see the replica promoted within seconds. A
killed node comes back the way the shipped Kubernetes start script brings a pod
back: as a replica of the primary the sentinels name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from flashgate.errors import StackError
from flashgate.stack.ports import wait_for_port
from flashgate.stack.process import ManagedProcess
from flashgate.stack.redis_cluster import wait_until
from flashgate.stack.redis_server import HOST, RedisServer, ensure_redis_installed, redis_cli

MASTER_NAME = "flashgate"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000
QUORUM = 2
READY_TIMEOUT_S = 60.0


@dataclass
class RedisSentinelNodes:
    """`data_ports`: the first starts as primary, the others as its replicas."""

    data_ports: list[int]
    sentinel_ports: list[int]
    data_dir: Path
    master_name: str = MASTER_NAME
    # Extra redis-server options for every data node and sentinel (TLS).
    extra_args: list[str] = field(default_factory=list)
    servers: list[RedisServer] = field(default_factory=list)
    sentinels: list[ManagedProcess] = field(default_factory=list)

    @property
    def sentinel_addresses(self) -> list[str]:
        return [f"{HOST}:{port}" for port in self.sentinel_ports]

    def start(self, log_dir: Path) -> None:
        primary = self.data_ports[0]
        for index in range(len(self.data_ports)):
            server = self._server(index, None if index == 0 else primary)
            server.start(log_dir / f"redis-{index}.log")
            self.servers.append(server)
        for server in self.servers:
            server.wait_listening()
        for index, port in enumerate(self.sentinel_ports):
            self.sentinels.append(self._start_sentinel(index, port, primary, log_dir))
        for port in self.sentinel_ports:
            wait_for_port("Redis Sentinel", HOST, port, READY_TIMEOUT_S)

    def _server(self, index: int, primary: int | None) -> RedisServer:
        follow = [] if primary is None else ["--replicaof", HOST, str(primary)]
        return RedisServer(
            self.data_ports[index],
            self.data_dir / f"node-{index}",
            extra_args=[*follow, "--repl-diskless-sync-delay", "0", *self.extra_args],
        )

    def restart_as_replica(self, index: int, log_path: Path) -> None:
        """Start stopped data node `index` again as a replica of the primary the sentinels
        name now, as the Kubernetes start script does. (Started as the primary it was,
        it waits for the sentinels to turn it into a replica: their timers make that
        about 10 s here, and no rejoin within a minute was seen on a loaded machine.)"""
        primary = self.primary_port()
        if primary is None or primary == self.data_ports[index]:
            raise StackError(f"the sentinels name no other primary than node {index}")
        server = self._server(index, primary)
        server.start(log_path)
        server.wait_listening()
        self.servers[index] = server

    def _start_sentinel(self, index: int, port: int, primary: int, log_dir: Path) -> ManagedProcess:
        # Sentinel rewrites its own config file (what it learns): one file each.
        config = self.data_dir / f"sentinel-{index}" / "sentinel.conf"
        config.parent.mkdir(parents=True, exist_ok=True)
        if not config.exists():
            name = self.master_name
            config.write_text(
                f"port {port}\nbind {HOST}\ndir {config.parent}\n"
                f"sentinel monitor {name} {HOST} {primary} {QUORUM}\n"
                f"sentinel down-after-milliseconds {name} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {name} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {name} 1\n"
            )
        argv = [ensure_redis_installed(), str(config), "--sentinel", *self.extra_args]
        process = ManagedProcess(
            f"sentinel-{index}", argv, log_path=log_dir / f"sentinel-{index}.log"
        )
        process.start()
        return process

    def wait_replicas_online(
        self, port: int, replicas: int, timeout_s: float = READY_TIMEOUT_S
    ) -> None:
        """The primary on `port` streams to `replicas` replicas (their first sync done)."""

        def online() -> bool:
            try:
                info = redis_cli(port, "INFO", "replication").split()
            except StackError:
                return False
            streaming = [line for line in info if line.startswith("slave") and "online" in line]
            return len(streaming) >= replicas

        wait_until(online, timeout_s, "Redis replicas")

    def primary_port(self) -> int | None:
        """The primary's port as the first sentinel that answers sees it now."""
        for port in self.sentinel_ports:
            try:
                reply = redis_cli(port, "SENTINEL", "get-master-addr-by-name", self.master_name)
            except StackError:
                continue
            lines = reply.split()
            if len(lines) == 2 and lines[1].isdigit():
                return int(lines[1])
        return None

    def stop(self, timeout_s: float = 10.0) -> None:
        for process in self.sentinels:
            process.stop(timeout_s)
        for server in self.servers:
            server.stop(timeout_s)

"""Redis for `flashgate up`: standalone (the default), a Redis Cluster or Sentinel,
optionally over TLS only, and the FLASHGATE_REDIS_* settings that point the
stack's processes at it.

- standalone: one server on the settings' port (6379);
- cluster: 3 primaries + 3 replicas on that port and the next five;
- sentinel: a primary on that port, a replica on the next, 3 sentinels on
  port + 20000 and the next two (26379-26381 by default);
- TLS: certificates generated into the state directory, plaintext port off.

Cluster and Sentinel run with `wait_replicas = 1` (guarantee 7).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flashgate.errors import StackError
from flashgate.stack.process import ManagedProcess
from flashgate.stack.redis_cluster import RedisClusterNodes
from flashgate.stack.redis_sentinel import RedisSentinelNodes
from flashgate.stack.redis_server import HOST, RedisServer
from flashgate.stack.redis_tls import ensure_tls_files

TOPOLOGIES = ("standalone", "cluster", "sentinel")
CLUSTER_NODES = 6
CLUSTER_BUS_OFFSET = 10_000
SENTINEL_OFFSET = 20_000


@dataclass
class LocalRedis:
    """What was started: its processes, the settings for clients, a line for the user."""

    processes: list[ManagedProcess]
    client_env: dict[str, str]
    summary: str


def start_local_redis(
    topology: str,
    tls: bool,
    port: int,
    state: Path,
    log_path: Callable[[str], Path],
    pid_path: Callable[[str], Path],
) -> LocalRedis:
    """Start `topology` on `port` (and the ports after it); wait until it serves.
    A topology that fails to come up is stopped whole before the error is raised."""
    if topology not in TOPOLOGIES:
        raise StackError(f"FLASHGATE_STACK_REDIS must be one of {', '.join(TOPOLOGIES)}")
    if tls and topology == "sentinel":
        raise StackError("Sentinel over TLS is not in the local stack yet (cluster and "
                         "standalone are)")  # fmt: skip
    files = ensure_tls_files(state / "redis-tls") if tls else None
    scheme = "rediss" if tls else "redis"
    client_env = files.client_env() if files else {}
    if topology == "cluster":
        ports = [port + i for i in range(CLUSTER_NODES)]
        cluster = RedisClusterNodes(
            ports,
            [p + CLUSTER_BUS_OFFSET for p in ports],
            state / "redis-cluster",
            tls_server_args=files.server_args if files else None,
            tls_cli_args=files.cli_args if files else [],
        )
        try:
            cluster.start(log_path("redis").parent, pid_path("redis").parent)
        except BaseException:
            cluster.stop()
            raise
        client_env |= {
            "FLASHGATE_REDIS_MODE": "cluster",
            "FLASHGATE_REDIS_URL": cluster.url,
            "FLASHGATE_REDIS_WAIT_REPLICAS": "1",
        }
        return LocalRedis(
            _processes(cluster.servers),
            client_env,
            f"{scheme}://{HOST}:{ports[0]}-{ports[-1]} (cluster, 3 primaries + 3 replicas)",
        )
    if topology == "sentinel":
        sentinels = [port + SENTINEL_OFFSET + i for i in range(3)]
        nodes = RedisSentinelNodes([port, port + 1], sentinels, state / "redis-sentinel")
        try:
            nodes.start(log_path("redis").parent)
            nodes.wait_replicas_online(port, 1)
        except BaseException:
            nodes.stop()
            raise
        client_env |= {
            "FLASHGATE_REDIS_MODE": "sentinel",
            "FLASHGATE_REDIS_URL": f"{scheme}://{HOST}/0",
            "FLASHGATE_REDIS_SENTINELS": ",".join(nodes.sentinel_addresses),
            "FLASHGATE_REDIS_SENTINEL_MASTER": nodes.master_name,
            "FLASHGATE_REDIS_WAIT_REPLICAS": "1",
        }
        return LocalRedis(
            [*_processes(nodes.servers), *nodes.sentinels],
            client_env,
            f"sentinel {nodes.master_name} via {','.join(nodes.sentinel_addresses)} "
            f"(primary {port}, replica {port + 1})",
        )
    server = RedisServer(port, state / "redis", extra_args=files.server_args(port) if files else [])
    server.start(log_path("redis"), pid_path("redis"))
    try:
        server.wait_listening()
    except BaseException:
        server.stop()
        raise
    if files:
        client_env["FLASHGATE_REDIS_URL"] = f"rediss://{HOST}:{port}/0"
    return LocalRedis(_processes([server]), client_env, f"{scheme}://{HOST}:{port}/0")


def _processes(servers: list[RedisServer]) -> list[ManagedProcess]:
    return [server.process for server in servers if server.process is not None]

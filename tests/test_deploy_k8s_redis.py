"""The Kubernetes Redis under Sentinel (deploy/k8s/base/redis.yaml), offline: the
sentinel config against flashgate.toml, the pod layout, and the start-up scripts
run with `sh` against stand-ins for redis-cli, redis-server and redis-sentinel.
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from flashgate.errors import StackError
from flashgate.stack.ports import free_port, wait_for_port
from flashgate.stack.process import ManagedProcess
from flashgate.stack.redis_server import HOST, RedisServer, ensure_redis_installed, redis_cli
from tests.deploy_support import COMPOSE_DIR, K8S, Manifest, by_kind, containers, kustomize_build

SCRIPTS = ("find-primary.sh", "start-redis.sh", "start-sentinel.sh")


@pytest.fixture(scope="module")
def demo() -> list[Manifest]:
    return kustomize_build(K8S / "overlays" / "demo")


def _config_map(demo: list[Manifest]) -> dict[str, str]:
    data: dict[str, str] = by_kind(demo, "ConfigMap")["redis-sentinel"]["data"]
    return data


def _container(demo: list[Manifest], name: str) -> Manifest:
    (found,) = [c for c in containers(by_kind(demo, "StatefulSet")["redis"]) if c["name"] == name]
    return found


def _settings(demo: list[Manifest]) -> dict[str, object]:
    config = by_kind(demo, "ConfigMap")["flashgate-config"]["data"]["flashgate.toml"]
    redis: dict[str, object] = tomllib.loads(config)["redis"]
    return redis


def test_sentinels_watch_the_primary_flashgate_names_with_quorum_2(demo: list[Manifest]) -> None:
    conf = _config_map(demo)["sentinel.conf"].splitlines()
    (monitor,) = [line.split() for line in conf if line.startswith("sentinel monitor ")]
    _, _, master, host, port, quorum = monitor
    settings = _settings(demo)
    statefulset = by_kind(demo, "StatefulSet")["redis"]
    replicas = statefulset["spec"]["replicas"]
    assert master == settings["sentinel_master"] == "flashgate"
    assert host == f"redis-0.{statefulset['spec']['serviceName']}"
    redis_ports = {p["name"]: p["containerPort"] for p in _container(demo, "redis")["ports"]}
    assert int(port) == redis_ports["redis"]
    # A majority of the sentinels, one per pod: one alone never fails over.
    assert int(quorum) == 2 and replicas == 3 and int(quorum) > replicas // 2
    assert "sentinel resolve-hostnames yes" in conf and "sentinel announce-hostnames yes" in conf
    for option in ("down-after-milliseconds", "failover-timeout", "parallel-syncs"):
        assert any(line.startswith(f"sentinel {option} {master} ") for line in conf), option
    sentinel_ports = {p["name"]: p["containerPort"] for p in _container(demo, "sentinel")["ports"]}
    assert f"port {sentinel_ports['sentinel']}" in conf
    # flashgate asks those sentinels and waits for a replica per admission.
    assert settings["mode"] == "sentinel" and settings["wait_replicas"] == 1


def test_compose_sentinels_run_the_same_config_but_for_the_primary_host(
    demo: list[Manifest],
) -> None:
    def settings_lines(text: str) -> list[str]:
        return [line for line in text.splitlines() if line and not line.startswith("#")]

    k8s = settings_lines(_config_map(demo)["sentinel.conf"])
    compose = settings_lines((COMPOSE_DIR / "redis" / "sentinel.conf").read_text())
    assert [line.replace("redis-0.redis-headless", "redis") for line in k8s] == compose


def test_each_pod_runs_redis_and_a_sentinel_on_its_own_machine(demo: list[Manifest]) -> None:
    statefulset = by_kind(demo, "StatefulSet")["redis"]
    pod = statefulset["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["redis", "sentinel"]
    redis, sentinel = _container(demo, "redis"), _container(demo, "sentinel")
    assert redis["image"] == sentinel["image"]
    assert redis["command"] == ["sh", "/config/start-redis.sh"]
    assert sentinel["command"] == ["sh", "/config/start-sentinel.sh"]
    for container in (redis, sentinel):
        env = {e["name"]: e for e in container["env"]}
        assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in sentinel["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/sentinel"]]  # a sentinel rewrites its config
    assert volumes[mounts["/config"]]["configMap"]["name"] == "redis-sentinel"
    assert set(SCRIPTS) <= set(_config_map(demo))
    (term,) = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"].items() <= (
        statefulset["spec"]["template"]["metadata"]["labels"].items()
    )
    budget = by_kind(demo, "PodDisruptionBudget")["redis"]["spec"]
    assert budget["maxUnavailable"] == 1
    assert budget["selector"]["matchLabels"] == term["labelSelector"]["matchLabels"]


def _stub(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _prepare(
    demo: list[Manifest], tmp_path: Path, pod: str, primary: str, port: int = 6379
) -> tuple[Path, dict[str, str]]:
    """The ConfigMap's files under `tmp_path` as pod `pod` sees them, the other
    sentinels naming `primary` at `port` ("" = none answers): the scripts' directory
    and environment."""
    config, state, bin_dir = tmp_path / "config", tmp_path / "sentinel", tmp_path / "bin"
    for directory in (config, state, bin_dir):
        directory.mkdir(parents=True, exist_ok=True)
    for name, text in _config_map(demo).items():
        text = text.replace("/config/", f"{config}/").replace("/sentinel/", f"{state}/")
        (config / name).write_text(text)
    # redis-cli answers `sentinel get-master-addr-by-name` as a sentinel would.
    answer = f'printf "%s\\n{port}\\n" {shlex.quote(primary)}' if primary else "exit 1"
    _stub(bin_dir, "redis-cli", answer + "\n")
    # One argument a line, so an empty one ("--save", "") shows.
    _stub(bin_dir, "redis-server", 'printf "%s\\n" redis-server "$@"\n')
    _stub(bin_dir, "redis-sentinel", 'echo "redis-sentinel $*"; cat "$1"\n')
    return config, {"PATH": f"{bin_dir}:{os.environ['PATH']}", "POD_NAME": pod}


def _run(
    demo: list[Manifest], tmp_path: Path, script: str, pod: str, primary: str, *args: str
) -> str:
    """Run one start-up script as pod `pod` would, the other sentinels naming
    `primary` ("" = none answers); what it finally executed, one argument a line
    for redis-server."""
    config, env = _prepare(demo, tmp_path, pod, primary)
    done = subprocess.run(
        ["sh", str(config / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    return done.stdout


def test_first_start_makes_redis_0_the_primary(demo: list[Manifest], tmp_path: Path) -> None:
    args = _container(demo, "redis")["args"]
    first = _run(demo, tmp_path, "start-redis.sh", "redis-0", "", *args)
    assert first.split("\n")[:-1] == [*args, "--replica-announce-ip", "redis-0.redis-headless"]
    second = _run(demo, tmp_path, "start-redis.sh", "redis-1", "", *args)
    assert second.split("\n")[:-1] == [
        *args,
        "--replica-announce-ip",
        "redis-1.redis-headless",
        "--replicaof",
        "redis-0.redis-headless",
        "6379",
    ]


def test_a_restarted_pod_follows_the_primary_the_sentinels_name(
    demo: list[Manifest], tmp_path: Path
) -> None:
    # redis-0 was the primary, died, and redis-2 was promoted: redis-0 comes back as
    # its replica, and its sentinel watches redis-2.
    args = _container(demo, "redis")["args"]
    back = _run(demo, tmp_path, "start-redis.sh", "redis-0", "redis-2.redis-headless", *args)
    assert back.split()[-3:] == ["--replicaof", "redis-2.redis-headless", "6379"]
    promoted = _run(demo, tmp_path, "start-redis.sh", "redis-2", "redis-2.redis-headless", *args)
    assert "--replicaof" not in promoted
    sentinel = _run(demo, tmp_path, "start-sentinel.sh", "redis-0", "redis-2.redis-headless")
    assert "sentinel monitor flashgate redis-2.redis-headless 6379 2" in sentinel
    assert "sentinel announce-ip redis-0.redis-headless" in sentinel
    fresh = _run(demo, tmp_path, "start-sentinel.sh", "redis-1", "")
    assert "sentinel monitor flashgate redis-0.redis-headless 6379 2" in fresh


def test_a_real_sentinel_runs_the_shipped_config(demo: list[Manifest], tmp_path: Path) -> None:
    """Debian's redis-server --sentinel takes the ConfigMap's file as start-sentinel.sh
    writes it (hostnames resolved and announced), on loopback: the primary named by
    host name (`localhost` for redis-0.redis-headless), quorum 2."""
    written = _run(demo, tmp_path / "script", "start-sentinel.sh", "redis-1", "")
    primary = RedisServer(free_port(), tmp_path / "primary", appendonly=False)
    port = free_port()
    conf = written.split("\n", 1)[1]  # after the stand-in's "redis-sentinel <file>" line
    conf = (
        conf.replace("port 26379", f"port {port}\nbind {HOST}")
        .replace("dir /sentinel", f"dir {tmp_path}")
        .replace("redis-0.redis-headless 6379", f"localhost {primary.port}")
        .replace("redis-1.redis-headless", "localhost")
    )
    assert f"sentinel monitor flashgate localhost {primary.port} 2" in conf
    config = tmp_path / "sentinel.conf"
    config.write_text(conf)
    sentinel = ManagedProcess(
        "sentinel",
        [ensure_redis_installed(), str(config), "--sentinel"],
        log_path=tmp_path / "sentinel.log",
    )
    try:
        primary.start(tmp_path / "primary.log")
        primary.wait_listening()
        sentinel.start()
        wait_for_port("Redis Sentinel", HOST, port, 20)
        deadline = time.monotonic() + 20
        while True:
            try:
                master = redis_cli(port, "sentinel", "master", "flashgate").split("\n")
                fields = dict(zip(master[0::2], master[1::2], strict=False))
                # A run id: the sentinel reached the primary by its name and read INFO.
                if fields.get("flags") == "master" and fields.get("runid"):
                    break
            except StackError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "sentinel.log").read_text()[-2000:]
            time.sleep(0.2)
        assert (fields["ip"], fields["port"], fields["quorum"]) == (
            "localhost",
            str(primary.port),
            "2",
        )
        assert sentinel.running()
    finally:
        sentinel.stop(10)
        primary.stop()


def _initial_aof_written(info: str) -> bool:
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    return (
        int(fields["aof_rewrites"]) >= 1
        and fields["aof_rewrite_in_progress"] == "0"
        and fields["aof_rewrite_scheduled"] == "0"
    )


def test_a_real_replica_follows_the_primary_the_sentinels_name(
    demo: list[Manifest], tmp_path: Path
) -> None:
    """start-redis.sh execs Debian's redis-server with the container's args: named a
    primary by the sentinels, it replicates it and announces the pod's name."""
    # No 5 s wait before the first full sync (repl-diskless-sync-delay), in a test.
    primary = RedisServer(
        free_port(),
        tmp_path / "primary",
        appendonly=False,
        extra_args=["--repl-diskless-sync-delay", "0"],
    )
    replica_port = free_port()
    config, env = _prepare(demo, tmp_path / "pod", "redis-1", HOST, primary.port)
    args = _container(demo, "redis")["args"]
    data = tmp_path / "replica"
    data.mkdir()
    argv = [ensure_redis_installed(), *args[1:], "--port", str(replica_port), "--bind", HOST]
    argv = [str(data) if arg == "/data" else arg for arg in argv]
    replica = ManagedProcess(
        "replica",
        ["sh", str(config / "start-redis.sh"), *argv],
        log_path=tmp_path / "replica.log",
        env=env,
    )
    try:
        primary.start(tmp_path / "primary.log")
        primary.wait_listening()
        replica.start()
        wait_for_port("replica", HOST, replica_port, 20)
        deadline = time.monotonic() + 20
        while "master_link_status:up" not in redis_cli(replica_port, "info", "replication"):
            assert time.monotonic() < deadline, (tmp_path / "replica.log").read_text()[-2000:]
            time.sleep(0.2)
        info = redis_cli(primary.port, "info", "replication")
        assert f"slave0:ip=redis-1.redis-headless,port={replica_port}," in info
        assert redis_cli(replica_port, "config", "get", "maxmemory-policy").split() == [
            "maxmemory-policy",
            "noeviction",
        ]
        # A replica refuses SIGTERM while it writes its first AOF after the sync.
        while not _initial_aof_written(redis_cli(replica_port, "info", "persistence")):
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        replica.stop(10)
        primary.stop()

"""The compose and Kubernetes deploys agree with each other and with the settings.

Same image and commands, same ports, same topic settings (partitions,
replication 3, min.insync.replicas 2, 3-day retention), same broker settings,
same flashgate.toml but for addresses and the few keys that follow from what
stands in front of each deploy (DEPLOY_SPECIFIC). Every FLASHGATE_* variable either deploy
sets must be a field of `flashgate.settings.Settings`, and both settings files
must load with the project's own loader, so a renamed key breaks this test.
"""

from __future__ import annotations

import itertools
import re
import shlex
from typing import Any

import msgspec
import pytest
import yaml

from flashgate.secret import mask_secret
from flashgate.settings import Settings, load_settings
from flashgate.stack.kafka_jars import KAFKA_VERSION
from tests.deploy_support import (
    COMPOSE_DIR,
    COMPOSE_FILE,
    K8S,
    Manifest,
    by_kind,
    containers,
    kustomize_build,
    settings_env_names,
)

K8S_TOML = K8S / "base" / "flashgate.toml"
COMPOSE_TOML = COMPOSE_DIR / "config" / "flashgate.toml"
# The compose `sentinel` profile's settings: the twin of the Kubernetes file.
COMPOSE_SENTINEL_TOML = COMPOSE_DIR / "config" / "flashgate-sentinel.toml"
RETENTION_3_DAYS_MS = 3 * 24 * 3600 * 1000
# The settings that name other services: the only ones allowed to differ.
ADDRESSES = {
    ("kafka", "bootstrap_servers"),
    ("redis", "url"),
    ("redis", "sentinels"),
    ("drain", "backend_url"),
}
# What the compose default (one Redis) and its `sentinel` profile may differ in.
REDIS_TOPOLOGY = {
    ("redis", "mode"),
    ("redis", "sentinels"),
    ("redis", "sentinel_master"),
    ("redis", "wait_replicas"),
}
# Keys that follow from each deploy's surroundings. Compose's HAProxy overwrites
# X-Forwarded-For with the client's address; the Kubernetes deploy ships no
# ingress, so it trusts no such header, and per-IP limits stay off there (every
# request would carry the ingress controller's address). Its consumers serve
# health on the pod's address for kubelet's probes.
DEPLOY_SPECIFIC = {
    ("gateway", "trust_forwarded_for"),
    ("sales", "ip_rate_per_s"),
    ("drain", "health_host"),
    ("drain", "health_port"),
}
# Container ports only the Kubernetes deploy has: the consumer's probe port.
K8S_ONLY_PORTS = {"health"}
ROLES = {"gateway": "gateway", "consumer": "consumer", "backend": "order-backend"}


@pytest.fixture(scope="module")
def k8s() -> list[Manifest]:
    return kustomize_build(K8S / "overlays" / "demo")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    return services


def _k8s_env(container: Manifest) -> dict[str, str]:
    # Secret values are not in the manifests; any non-empty value stands in.
    return {item["name"]: item.get("value", "from-a-secret") for item in container.get("env", [])}


def _compose_env(service: dict[str, Any], given: dict[str, str] | None = None) -> dict[str, str]:
    """`${NAME:?message}` / `${NAME:-default}` as docker compose fills them from its
    environment `given`: a default when NAME is not given, else a stand-in value."""
    given = given or {}

    def fill(match: re.Match[str]) -> str:
        name, _, default = match[1].partition(":-")
        name = name.partition(":?")[0]
        if name in given:
            return given[name]
        return default if ":-" in match[1] else "from-the-environment"

    return {
        name: re.sub(r"\$\{([^}]*)\}", fill, str(value))
        for name, value in service.get("environment", {}).items()
    }


def _load(path: Any, env: dict[str, str]) -> Settings:
    return load_settings(path, environ=env)


def _without(settings: Settings, keys: set[tuple[str, str]]) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.to_builtins(settings, enc_hook=mask_secret)
    for section, key in keys:
        data[section].pop(key, None)
    return data


def _without_addresses(settings: Settings) -> dict[str, Any]:
    return _without(settings, ADDRESSES | DEPLOY_SPECIFIC)


def _without_maxmemory(args: list[str]) -> list[str]:
    # Sized from the container's memory limit, which only the Kubernetes deploy sets.
    # Where a server announces itself and whom it replicates differ per node (on
    # Kubernetes, start-redis.sh adds them from the pod's name and the sentinels).
    out = list(args)
    for flag, values in (("--maxmemory", 1), ("--replica-announce-ip", 1), ("--replicaof", 2)):
        if flag in out:
            at = out.index(flag)
            out = out[:at] + out[at + 1 + values :]
    return out


def _topics_created_by_compose(compose: dict[str, Any]) -> dict[str, dict[str, str]]:
    """`kafka-topics.sh --create` lines of the kafka-init service, flag -> value per topic."""
    topics: dict[str, dict[str, str]] = {}
    for line in compose["kafka-init"]["command"][0].splitlines():
        if "kafka-topics.sh" not in line:
            continue
        words = shlex.split(line)
        flags: dict[str, str] = {}
        for flag, value in itertools.pairwise(words):
            if flag == "--config":
                key, _, setting = value.partition("=")
                flags[key] = setting
            elif flag.startswith("--"):
                flags[flag[2:]] = value
        topics[flags["topic"]] = flags
    return topics


def test_every_flashgate_variable_is_a_setting(
    k8s: list[Manifest], compose: dict[str, Any]
) -> None:
    valid = settings_env_names()
    used = {
        name
        for manifest in k8s
        if manifest["kind"] == "Deployment"
        for container in containers(manifest)
        for name in _k8s_env(container)
    } | {name for service in compose.values() for name in _compose_env(service)}
    flashgate = {name for name in used if name.startswith("FLASHGATE_")}
    assert flashgate, "the deploys set no FLASHGATE_ variable at all"
    assert flashgate <= valid, f"not settings: {sorted(flashgate - valid)}"


def test_both_settings_files_load_with_the_deploys_environment(
    k8s: list[Manifest], compose: dict[str, Any]
) -> None:
    for name in ("gateway", "consumer"):
        (container,) = containers(by_kind(k8s, "Deployment")[name])
        _load(K8S_TOML, _k8s_env(container))
        _load(COMPOSE_TOML, _compose_env(compose[name]))
        _load(COMPOSE_SENTINEL_TOML, _compose_env(compose[name]))


def test_compose_picks_its_settings_file_by_profile(compose: dict[str, Any]) -> None:
    for name in ("gateway", "consumer"):
        default = _compose_env(compose[name])["FLASHGATE_CONFIG"]
        assert default == "/etc/flashgate/flashgate.toml", name
        chosen = _compose_env(compose[name], {"FLASHGATE_SETTINGS": COMPOSE_SENTINEL_TOML.name})
        path = chosen["FLASHGATE_CONFIG"]
        assert path == f"/etc/flashgate/{COMPOSE_SENTINEL_TOML.name}", name
        assert load_settings(environ={**chosen, "FLASHGATE_CONFIG": str(COMPOSE_SENTINEL_TOML)})


def test_settings_files_differ_only_in_addresses() -> None:
    k8s = _load(K8S_TOML, {})
    assert _without_addresses(k8s) == _without_addresses(_load(COMPOSE_SENTINEL_TOML, {}))
    # The compose default is the same but for one Redis instead of Sentinel.
    assert _without(_load(COMPOSE_TOML, {}), REDIS_TOPOLOGY) == _without(
        _load(COMPOSE_SENTINEL_TOML, {}), REDIS_TOPOLOGY
    )


def test_both_deploys_run_redis_under_sentinel_with_a_replica_per_admission(
    k8s: list[Manifest], compose: dict[str, Any]
) -> None:
    for path in (K8S_TOML, COMPOSE_SENTINEL_TOML):
        redis = _load(path, {}).redis
        assert (redis.mode, redis.sentinel_master, redis.wait_replicas) == (
            "sentinel",
            "flashgate",
            1,
        ), path
        assert len(redis.sentinels) == 3, path
    statefulset = by_kind(k8s, "StatefulSet")["redis"]
    pods = [
        f"{statefulset['metadata']['name']}-{i}" for i in range(statefulset["spec"]["replicas"])
    ]
    headless = statefulset["spec"]["serviceName"]
    ports = {p["name"]: p["port"] for p in by_kind(k8s, "Service")[headless]["spec"]["ports"]}
    assert _load(K8S_TOML, {}).redis.sentinels == [
        f"{pod}.{headless}:{ports['sentinel']}" for pod in pods
    ]
    sentinels = [name for name in compose if name.startswith("sentinel-")]
    assert _load(COMPOSE_SENTINEL_TOML, {}).redis.sentinels == [f"{s}:26379" for s in sentinels]
    assert all(compose[s]["profiles"] == ["sentinel"] for s in sentinels)


def test_addresses_name_services_of_their_own_deploy(
    k8s: list[Manifest], compose: dict[str, Any]
) -> None:
    on_k8s = _load(K8S_TOML, {})
    (kafka,) = by_kind(k8s, "Kafka").values()
    assert on_k8s.kafka.bootstrap_servers == f"{kafka['metadata']['name']}-kafka-bootstrap:9092"
    services = by_kind(k8s, "Service")
    assert on_k8s.redis.url == "redis://redis:6379/0" and "redis" in services
    assert all(
        address.split(":")[0].split(".")[1] in services for address in on_k8s.redis.sentinels
    )
    assert on_k8s.drain.backend_url == "http://order-backend:8090" and "order-backend" in services
    on_compose = _load(COMPOSE_TOML, {})
    brokers = on_compose.kafka.bootstrap_servers.split(",")
    assert [b.split(":")[0] for b in brokers] == ["kafka-1", "kafka-2", "kafka-3"]
    assert all(b.split(":")[0] in compose for b in brokers)
    assert on_compose.redis.url == "redis://redis:6379/0" and "redis" in compose
    on_sentinel = _load(COMPOSE_SENTINEL_TOML, {})
    assert all(address.split(":")[0] in compose for address in on_sentinel.redis.sentinels)
    assert on_compose.drain.backend_url == "http://backend:8090" and "backend" in compose


def test_topics_agree_everywhere(k8s: list[Manifest], compose: dict[str, Any]) -> None:
    settings = _load(K8S_TOML, {})
    kafka = settings.kafka
    assert (kafka.replication_factor, kafka.min_insync_replicas) == (3, 2)
    assert kafka.retention_ms == RETENTION_3_DAYS_MS
    strimzi = {t["spec"]["topicName"]: t["spec"] for t in by_kind(k8s, "KafkaTopic").values()}
    created = _topics_created_by_compose(compose)
    assert set(strimzi) == set(created) == {kafka.orders_topic, kafka.dlq_topic}
    for topic in (kafka.orders_topic, kafka.dlq_topic):
        spec, flags = strimzi[topic], created[topic]
        assert spec["partitions"] == int(flags["partitions"])
        assert spec["replicas"] == int(flags["replication-factor"]) == kafka.replication_factor
        for key in ("min.insync.replicas", "retention.ms"):
            assert str(spec["config"][key]) == flags[key], (topic, key)
        assert spec["config"]["min.insync.replicas"] == kafka.min_insync_replicas
        assert spec["config"]["retention.ms"] == kafka.retention_ms
    # flashgate.kafka.topics.ensure_topics creates the same shape.
    assert strimzi[kafka.orders_topic]["partitions"] == kafka.partitions
    assert strimzi[kafka.dlq_topic]["partitions"] == 1


def test_brokers_agree(k8s: list[Manifest], compose: dict[str, Any]) -> None:
    (pool,) = by_kind(k8s, "KafkaNodePool").values()
    nodes = [name for name in compose if re.fullmatch(r"kafka-\d+", name)]
    assert pool["spec"]["replicas"] == len(nodes) == 3
    (kafka,) = by_kind(k8s, "Kafka").values()
    for key, value in kafka["spec"]["kafka"]["config"].items():
        expected = str(value).lower() if isinstance(value, bool) else str(value)
        variable = "KAFKA_" + key.upper().replace(".", "_")
        for node in nodes:
            assert str(compose[node]["environment"][variable]) == expected, (node, key)
    # Compose runs the Apache Kafka release the tests run from Maven jars.
    assert {compose[node]["image"] for node in nodes} == {f"apache/kafka:{KAFKA_VERSION}"}


def test_images_commands_and_ports_agree(k8s: list[Manifest], compose: dict[str, Any]) -> None:
    deployments = by_kind(k8s, "Deployment")
    for service, deployment in ROLES.items():
        (container,) = containers(deployments[deployment])
        assert container["image"] == compose[service]["image"], service
        assert container["command"] == compose[service]["command"], service
        exposed = {
            str(p["containerPort"])
            for p in container.get("ports", [])
            if p["name"] not in K8S_ONLY_PORTS
        }
        assert exposed == set(compose[service].get("expose", [])), service
    settings = _load(K8S_TOML, {})
    (gateway,) = containers(deployments["gateway"])
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    assert (ports["http"], ports["admin"]) == (settings.gateway.port, settings.admin.port)
    (redis,) = [c for c in containers(by_kind(k8s, "StatefulSet")["redis"]) if c["name"] == "redis"]
    # The same release line; Kubernetes pins the exact release.
    repository, _, tag = redis["image"].partition(":")
    compose_repository, _, compose_tag = compose["redis"]["image"].partition(":")
    assert repository == compose_repository
    assert tag.split("-")[0].startswith(compose_tag.split("-")[0]), (tag, compose_tag)
    for node in ("redis", "redis-replica-1", "redis-replica-2"):
        assert _without_maxmemory(redis["args"]) == _without_maxmemory(compose[node]["command"])


def test_replicas_and_grace_periods_agree(k8s: list[Manifest], compose: dict[str, Any]) -> None:
    partitions = _load(K8S_TOML, {}).kafka.partitions
    deployments = by_kind(k8s, "Deployment")
    for name in ("gateway", "consumer"):
        pod = deployments[name]["spec"]["template"]["spec"]
        assert f"{pod['terminationGracePeriodSeconds']}s" == compose[name]["stop_grace_period"]
    # The gateway's count is its autoscaler's (no `replicas` in the Deployment).
    minimum = by_kind(k8s, "HorizontalPodAutoscaler")["gateway"]["spec"]["minReplicas"]
    assert minimum == compose["gateway"]["deploy"]["replicas"]
    assert deployments["consumer"]["spec"]["replicas"] == compose["consumer"]["deploy"]["replicas"]
    assert compose["consumer"]["deploy"]["replicas"] <= partitions
    assert deployments["consumer"]["spec"]["replicas"] <= partitions

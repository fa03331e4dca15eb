"""What the Kubernetes deploy must hold beyond its schemas: Redis memory bounds, the
headless governing Service, Kafka spread over nodes and zones, network policies,
monitors, probes and pinned images. Offline: the demo overlay rendered by kustomize.
"""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml

from flashgate.stack.kafka_jars import KAFKA_VERSION
from tests.deploy_support import (
    K8S,
    Manifest,
    by_kind,
    containers,
    kustomize_build,
    schema_errors,
)
from tests.network_policy_eval import Pod, allowed, selects

_UNITS = {"": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}
_QUANTITY = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "K": 1000, "M": 1000**2, "G": 1000**3}


@pytest.fixture(scope="module")
def demo() -> list[Manifest]:
    return kustomize_build(K8S / "overlays" / "demo")


def _redis_bytes(value: str) -> int:
    """A redis.conf memory size: `1400mb` (MiB), `1g` (10^9), ..."""
    match = re.fullmatch(r"([0-9]+)([a-z]*)", value.lower())
    assert match is not None, value
    return int(match[1]) * _UNITS[match[2]]


def _quantity_bytes(value: str) -> int:
    match = re.fullmatch(r"([0-9]+)([A-Za-z]*)", value)
    assert match is not None, value
    return int(match[1]) * _QUANTITY.get(match[2], 1)


def _arg(args: list[str], flag: str) -> str:
    assert flag in args, f"redis-server has no {flag}"
    return args[args.index(flag) + 1]


def test_redis_maxmemory_leaves_room_for_the_rewrite_fork(demo: list[Manifest]) -> None:
    (redis,) = [
        c for c in containers(by_kind(demo, "StatefulSet")["redis"]) if c["name"] == "redis"
    ]
    args = redis["args"]
    assert _arg(args, "--maxmemory-policy") == "noeviction"
    assert _arg(args, "--appendonly") == "yes"
    maxmemory = _redis_bytes(_arg(args, "--maxmemory"))
    limit = _quantity_bytes(redis["resources"]["limits"]["memory"])
    # The fork may copy the whole dataset; docs/OPERATIONS.md has the arithmetic.
    assert 0 < 2 * maxmemory <= limit, (maxmemory, limit)
    assert redis["resources"]["requests"]["memory"] == redis["resources"]["limits"]["memory"]


def test_redis_statefulset_is_governed_by_a_headless_service(demo: list[Manifest]) -> None:
    statefulset = by_kind(demo, "StatefulSet")["redis"]
    services = by_kind(demo, "Service")
    governing = services[statefulset["spec"]["serviceName"]]
    assert governing["spec"]["clusterIP"] == "None"
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert governing["spec"]["selector"].items() <= labels.items()
    # Ops tools reach a sentinel through `redis`'s stable virtual IP; flashgate names
    # the pods on the headless Service (test_deploy_k8s_redis.py).
    assert services["redis"]["spec"].get("clusterIP") != "None"
    assert [p["port"] for p in services["redis"]["spec"]["ports"]] == [26379]


def test_kafka_runs_the_release_the_tests_run(demo: list[Manifest]) -> None:
    (kafka,) = by_kind(demo, "Kafka").values()
    spec = kafka["spec"]["kafka"]
    assert spec["version"] == KAFKA_VERSION
    major_minor = ".".join(KAFKA_VERSION.split(".")[:2])
    assert re.fullmatch(rf"{re.escape(major_minor)}-IV[0-9]+", spec["metadataVersion"])


def test_kafka_nodes_never_share_a_machine_and_know_their_zone(demo: list[Manifest]) -> None:
    (kafka,) = by_kind(demo, "Kafka").values()
    assert kafka["spec"]["kafka"]["rack"] == {"topologyKey": "topology.kubernetes.io/zone"}
    for pool_name, pool in by_kind(demo, "KafkaNodePool").items():
        # Strimzi labels a pool's pods with their cluster and pool.
        pod_labels = {
            "strimzi.io/cluster": kafka["metadata"]["name"],
            "strimzi.io/pool-name": pool_name,
        }
        template = pool["spec"]["template"]["pod"]
        (term,) = template["affinity"]["podAntiAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert term["labelSelector"]["matchLabels"] == pod_labels
        zones = [
            c
            for c in template["topologySpreadConstraints"]
            if c["topologyKey"] == "topology.kubernetes.io/zone"
        ]
        assert zones and zones[0]["labelSelector"]["matchLabels"] == pod_labels


def test_the_strimzi_schemas_catch_a_misspelt_placement(demo: list[Manifest]) -> None:
    pool = yaml.safe_load(yaml.safe_dump(next(iter(by_kind(demo, "KafkaNodePool").values()))))
    pool["spec"]["template"]["pod"]["affinity"]["podAntiAfinity"] = {}
    assert schema_errors(pool)
    kafka = yaml.safe_load(yaml.safe_dump(next(iter(by_kind(demo, "Kafka").values()))))
    kafka["spec"]["kafka"]["rack"] = {"topologykey": "zone"}
    assert schema_errors(kafka)


NS = "flashgate"
# Labels Strimzi puts on the pods it runs for the cluster `flashgate`.
BROKER = {
    "strimzi.io/cluster": NS,
    "strimzi.io/kind": "Kafka",
    "strimzi.io/name": "flashgate-kafka",
}
ENTITY_OPERATOR = {"strimzi.io/cluster": NS, "strimzi.io/name": "flashgate-entity-operator"}
EXPORTER = {"strimzi.io/cluster": NS, "strimzi.io/name": "flashgate-kafka-exporter"}


def _pods(demo: list[Manifest]) -> dict[str, Pod]:
    own = {"kubernetes.io/metadata.name": NS}
    pods = {
        name: Pod(NS, manifest["spec"]["template"]["metadata"]["labels"], own)
        for kind in ("Deployment", "StatefulSet")
        for name, manifest in by_kind(demo, kind).items()
    }
    return {
        **pods,
        "broker": Pod(NS, BROKER, own),
        "entity-operator": Pod(NS, ENTITY_OPERATOR, own),
        "exporter": Pod(NS, EXPORTER, own),
        "stranger": Pod(NS, {"app": "debug-shell"}, own),
        "ops-pod": Pod(NS, {"flashgate.io/ops": "true"}, own),
        "cluster-operator": Pod("strimzi", {"strimzi.io/kind": "cluster-operator"}),
        "ingress": Pod("ingress", {"app": "controller"}, {"flashgate.io/ingress": "true"}),
        "prometheus": Pod("monitoring", {"app": "prometheus"}, {"flashgate.io/monitoring": "true"}),
        "ops": Pod("ops", {"app": "toolbox"}, {"flashgate.io/ops": "true"}),
        # Labelled like the gateway, in another namespace: that label proves nothing.
        "impostor": Pod("shop", {"app.kubernetes.io/name": "gateway"}),
    }


# (target, port): every source allowed; all others must be refused.
REACHABLE = {
    # Redis pods among themselves: replication, sentinels watching and voting.
    ("redis", 6379): {"gateway", "consumer", "redis"},
    ("redis", 26379): {"gateway", "consumer", "redis"},
    ("broker", 9092): {"gateway", "consumer"},
    ("broker", 9091): {"broker", "cluster-operator", "entity-operator", "exporter"},
    ("broker", 9090): {"broker", "cluster-operator"},
    ("broker", 8443): {"cluster-operator"},
    ("gateway", 8080): {"ingress", "prometheus"},
    ("gateway", 8081): {"ops", "ops-pod"},
    ("consumer", 8082): {"prometheus"},
    ("exporter", 9404): {"prometheus"},
    ("order-backend", 8090): {"consumer"},
    ("entity-operator", 8080): set(),
}


@pytest.mark.parametrize(("target", "port"), sorted(REACHABLE))
def test_network_policies_let_only_whom_they_must(
    demo: list[Manifest], target: str, port: int
) -> None:
    policies = list(by_kind(demo, "NetworkPolicy").values())
    pods = _pods(demo)
    reached = {
        name for name, source in pods.items() if allowed(policies, source, pods[target], port)
    }
    assert reached == REACHABLE[(target, port)]


def test_every_pod_of_the_namespace_is_isolated(demo: list[Manifest]) -> None:
    (deny,) = [p for p in by_kind(demo, "NetworkPolicy").values() if p["spec"]["podSelector"] == {}]
    assert deny["spec"]["policyTypes"] == ["Ingress"] and not deny["spec"].get("ingress")


def test_strimzi_generated_listener_policy_names_the_same_clients(demo: list[Manifest]) -> None:
    # Strimzi adds a policy per listener from networkPolicyPeers; policies add up, so
    # a listener without peers would open 9092 to everyone again.
    (kafka,) = by_kind(demo, "Kafka").values()
    pods = _pods(demo)
    for listener in kafka["spec"]["kafka"]["listeners"]:
        peers = listener["networkPolicyPeers"]
        allowed_sources = {
            name
            for name, pod in pods.items()
            if pod.namespace == NS and any(selects(p.get("podSelector"), pod.labels) for p in peers)
        }
        assert allowed_sources == {"gateway", "consumer"}, listener["name"]


def test_pod_monitors_scrape_a_named_port_of_the_pods_they_select(demo: list[Manifest]) -> None:
    monitors = by_kind(demo, "PodMonitor")
    assert set(monitors) == {"gateway", "consumer", "kafka-exporter"}
    workloads = by_kind(demo, "Deployment")
    for name in ("gateway", "consumer"):
        (endpoint,) = monitors[name]["spec"]["podMetricsEndpoints"]
        template = workloads[name]["spec"]["template"]
        assert selects(monitors[name]["spec"]["selector"], template["metadata"]["labels"])
        (container,) = template["spec"]["containers"]
        assert endpoint["port"] in {p["name"] for p in container["ports"]}, name
        assert endpoint["path"] == "/metrics"
    exporter = monitors["kafka-exporter"]["spec"]
    assert selects(exporter["selector"], EXPORTER) and not selects(exporter["selector"], BROKER)
    # Strimzi names the exporter's metrics port tcp-prometheus (9404).
    assert exporter["podMetricsEndpoints"][0]["port"] == "tcp-prometheus"


def test_consumer_probes_use_its_health_listener(demo: list[Manifest]) -> None:
    config = by_kind(demo, "ConfigMap")["flashgate-config"]["data"]["flashgate.toml"]
    drain = tomllib.loads(config)["drain"]
    (consumer,) = containers(by_kind(demo, "Deployment")["consumer"])
    ports = {p["name"]: p["containerPort"] for p in consumer["ports"]}
    assert ports == {"health": drain["health_port"]} and drain["health_host"] == "0.0.0.0"
    assert consumer["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert consumer["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_deleting_the_deploy_keeps_the_namespace(demo: list[Manifest]) -> None:
    for overlay in (K8S / "base", K8S / "overlays" / "demo"):
        assert not [m for m in kustomize_build(overlay) if m["kind"] == "Namespace"], overlay
    (namespace,) = kustomize_build(K8S / "namespace")
    assert namespace["kind"] == "Namespace"
    assert {m["metadata"].get("namespace") for m in demo} == {namespace["metadata"]["name"]}


def test_public_settings_trust_no_forwarded_header(demo: list[Manifest]) -> None:
    # No ingress ships here: see deploy/README.md before turning either on.
    config = tomllib.loads(by_kind(demo, "ConfigMap")["flashgate-config"]["data"]["flashgate.toml"])
    assert config["gateway"]["trust_forwarded_for"] is False
    assert config["sales"]["ip_rate_per_s"] == 0
    assert not by_kind(demo, "Ingress")


def test_third_party_images_are_pinned(demo: list[Manifest]) -> None:
    for manifest in demo:
        if manifest["kind"] not in ("Deployment", "StatefulSet"):
            continue
        for container in containers(manifest):
            image = container["image"]
            if image.startswith("flashgate"):
                continue  # ours, tagged by the overlay's `images:`
            tag = image.partition("@")[0].partition(":")[2]
            # An exact release (x.y.z), never a moving tag like 7.4-alpine or latest.
            assert re.fullmatch(r"\d+\.\d+\.\d+(-[a-z0-9.]+)?", tag), image

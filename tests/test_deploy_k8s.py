"""The Kubernetes manifests render with kustomize and every object validates offline.

Kubernetes objects are checked against the strict upstream JSON schemas (an
unknown or misspelt field fails), Strimzi's against deploy/k8s/schemas/. The
rest asserts what the deploy promises: probes, resources, non-root pods,
consumer replicas within the partition count, tokens only from Secrets.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml

from tests.deploy_support import (
    K8S,
    Manifest,
    by_kind,
    containers,
    kustomize_build,
    load_yaml_documents,
    schema_errors,
)

OVERLAYS = [K8S / "base", K8S / "overlays" / "demo"]
WORKLOADS = ("Deployment", "StatefulSet")


@pytest.fixture(scope="module")
def demo() -> list[Manifest]:
    return kustomize_build(K8S / "overlays" / "demo")


def _kustomizations() -> list[Path]:
    return sorted(K8S.rglob("kustomization.yaml"))


@pytest.mark.parametrize("kustomization", _kustomizations(), ids=lambda p: str(p.parent.name))
def test_every_file_a_kustomization_names_exists(kustomization: Path) -> None:
    spec = yaml.safe_load(kustomization.read_text())
    named = list(spec.get("resources", []))
    for generator in spec.get("configMapGenerator", []) + spec.get("secretGenerator", []):
        named += generator.get("files", []) + generator.get("envs", [])
    assert named, f"{kustomization} names nothing"
    for entry in named:
        assert (kustomization.parent / entry).exists(), f"{kustomization}: {entry} is missing"


def test_every_manifest_file_is_used_by_a_kustomization() -> None:
    used: set[Path] = set()
    for kustomization in _kustomizations():
        spec = yaml.safe_load(kustomization.read_text())
        used |= {(kustomization.parent / entry).resolve() for entry in spec.get("resources", [])}
    manifests = {p.resolve() for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"}
    assert manifests <= used, f"not in any kustomization: {sorted(manifests - used)}"


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_every_rendered_object_validates(overlay: Path) -> None:
    rendered = kustomize_build(overlay)
    assert rendered
    errors = [error for manifest in rendered for error in schema_errors(manifest)]
    assert not errors, "\n".join(errors)


def test_every_source_file_validates_before_kustomize() -> None:
    # Kustomize fills in names and namespaces; the sources must be valid alone too,
    # so `kubectl apply -f` of one file works for a quick fix.
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for manifest in load_yaml_documents(path):
            assert not schema_errors(manifest), (path, schema_errors(manifest))


def test_the_schema_check_catches_a_misspelt_field(demo: list[Manifest]) -> None:
    gateway = by_kind(demo, "Deployment")["gateway"]
    broken = yaml.safe_load(yaml.safe_dump(gateway))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    assert any("readinesProbe" in error for error in schema_errors(broken))
    topic = yaml.safe_load(yaml.safe_dump(by_kind(demo, "KafkaTopic")["orders"]))
    topic["spec"]["replica"] = 3
    assert schema_errors(topic)


def test_gateway_probes_and_ports(demo: list[Manifest]) -> None:
    (gateway,) = containers(by_kind(demo, "Deployment")["gateway"])
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    assert ports == {"http": 8080, "admin": 8081}
    services = by_kind(demo, "Service")
    assert [p["port"] for p in services["gateway"]["spec"]["ports"]] == [8080]
    assert [p["port"] for p in services["gateway-admin"]["spec"]["ports"]] == [8081]
    assert services["gateway-admin"]["spec"].get("type", "ClusterIP") == "ClusterIP"


def test_autoscaler_and_disruption_budgets(demo: list[Manifest]) -> None:
    hpa = by_kind(demo, "HorizontalPodAutoscaler")["gateway"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "gateway"
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    budgets = by_kind(demo, "PodDisruptionBudget")
    deployments = by_kind(demo, "Deployment")
    for name in ("gateway", "consumer"):
        selector = budgets[name]["spec"]["selector"]["matchLabels"]
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), name


def test_consumer_replicas_never_exceed_partitions(demo: list[Manifest]) -> None:
    partitions = by_kind(demo, "KafkaTopic")["orders"]["spec"]["partitions"]
    assert by_kind(demo, "Deployment")["consumer"]["spec"]["replicas"] <= partitions


def test_kafka_is_kraft_replicated_three_ways(demo: list[Manifest]) -> None:
    (pool,) = by_kind(demo, "KafkaNodePool").values()
    assert sorted(pool["spec"]["roles"]) == ["broker", "controller"]
    assert pool["spec"]["replicas"] == 3
    (kafka,) = by_kind(demo, "Kafka").values()
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    config = kafka["spec"]["kafka"]["config"]
    assert config["default.replication.factor"] == 3
    assert config["min.insync.replicas"] == 2
    topics = {t["spec"]["topicName"]: t for t in by_kind(demo, "KafkaTopic").values()}
    assert set(topics) == {"orders", "orders.dlq"}
    for topic in topics.values():
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
        assert topic["spec"]["replicas"] == 3
        assert topic["spec"]["config"]["min.insync.replicas"] == 2
        assert topic["spec"]["config"]["retention.ms"] == 259_200_000


def test_pods_run_as_non_root_with_resource_requests(demo: list[Manifest]) -> None:
    for manifest in demo:
        if manifest["kind"] not in WORKLOADS:
            continue
        pod = manifest["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, manifest["metadata"]["name"]
        for container in pod["containers"]:
            requests = container["resources"]["requests"]
            assert {"cpu", "memory"} <= requests.keys(), container["name"]
            assert "memory" in container["resources"]["limits"], container["name"]
            assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_tokens_come_only_from_secrets(demo: list[Manifest]) -> None:
    for name in ("gateway", "consumer"):
        for container in containers(by_kind(demo, "Deployment")[name]):
            for variable in container.get("env", []):
                if "TOKEN" in variable["name"]:
                    assert "secretKeyRef" in variable["valueFrom"], variable
    config = by_kind(demo, "ConfigMap")["flashgate-config"]["data"]["flashgate.toml"]
    keys = [key for section in tomllib.loads(config).values() for key in section]
    assert not [key for key in keys if "token" in key], keys

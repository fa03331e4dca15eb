"""Every flashgate pod of the rendered manifests loads its settings in the environment
Kubernetes would give it.

That environment is the container's own `env` plus the service links of every
Service in the namespace: the rendered ones and those Strimzi creates for the
Kafka cluster (`<cluster>-kafka-bootstrap`, and the headless `-kafka-brokers`,
which gets none). The pods set `enableServiceLinks: false`, but the loader must
survive the links anyway (an overlay may drop the field), so they are included.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flashgate.settings import CONFIG_ENV, load_settings
from tests.deploy_support import K8S, Manifest, by_kind, kustomize_build
from tests.pod_env import container_env, namespace_service_links

WORKLOADS = ("Deployment", "StatefulSet")
# Strimzi names the client port of its built-in listener names after older releases.
STRIMZI_PORT_NAMES = {"plain": "tcp-clients", "tls": "tcp-clientstls"}
STRIMZI_REPLICATION_PORT = 9091


@pytest.fixture(scope="module")
def demo() -> list[Manifest]:
    return kustomize_build(K8S / "overlays" / "demo")


def strimzi_services(kafka: Manifest) -> list[Manifest]:
    """The Services Strimzi's operator creates for a Kafka cluster's internal listeners."""
    name = kafka["metadata"]["name"]
    ports = [{"name": "tcp-replication", "port": STRIMZI_REPLICATION_PORT}]
    for listener in kafka["spec"]["kafka"]["listeners"]:
        if listener["type"] in ("internal", "cluster-ip"):
            port_name = STRIMZI_PORT_NAMES.get(listener["name"], f"tcp-{listener['name']}")
            ports.append({"name": port_name, "port": listener["port"]})
    return [
        {"metadata": {"name": f"{name}-kafka-bootstrap"}, "spec": {"ports": ports}},
        {
            "metadata": {"name": f"{name}-kafka-brokers"},
            "spec": {"clusterIP": "None", "ports": ports},
        },
    ]


def namespace_services(rendered: list[Manifest]) -> list[Manifest]:
    services = [m for m in rendered if m["kind"] == "Service"]
    for kafka in by_kind(rendered, "Kafka").values():
        services += strimzi_services(kafka)
    return services


def _runs_flashgate(container: Manifest) -> bool:
    return str(container["image"]).split("@")[0].split(":")[0] == "flashgate"


def _flashgate_pods(rendered: list[Manifest]) -> list[tuple[str, Manifest, Manifest]]:
    found = []
    for manifest in rendered:
        if manifest["kind"] not in WORKLOADS:
            continue
        pod = manifest["spec"]["template"]["spec"]
        for container in pod["containers"]:
            if _runs_flashgate(container):
                found.append((manifest["metadata"]["name"], pod, container))
    return found


def _mounted_config(
    rendered: list[Manifest], pod: Manifest, container: Manifest, path: str, into: Path
) -> Path:
    """Where a test can read the file `path` the container sees from a ConfigMap volume."""
    config_maps = by_kind(rendered, "ConfigMap")
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        directory = mount["mountPath"].rstrip("/") + "/"
        if not path.startswith(directory):
            continue
        source = volumes[mount["name"]].get("configMap")
        assert source is not None, f"{path} is mounted from something other than a ConfigMap"
        data = config_maps[source["name"]]["data"]
        local = into / path[len(directory) :]
        local.write_text(data[path[len(directory) :]])
        return local
    raise AssertionError(f"{path} is not mounted in {container['name']}")


def test_strimzi_bootstrap_service_is_in_the_simulation(demo: list[Manifest]) -> None:
    links = namespace_service_links(namespace_services(demo))
    assert "FLASHGATE_KAFKA_BOOTSTRAP_SERVICE_HOST" in links
    # The client listener is named "tls" (TLS + SCRAM, issue 13): Strimzi calls its port so.
    assert links["FLASHGATE_KAFKA_BOOTSTRAP_SERVICE_PORT_TCP_CLIENTSTLS"] == "9092"
    assert not [name for name in links if name.startswith("FLASHGATE_KAFKA_BROKERS")]


def test_every_flashgate_pod_loads_its_settings_beside_every_service_link(
    demo: list[Manifest], tmp_path: Path
) -> None:
    links = namespace_service_links(namespace_services(demo))
    pods = _flashgate_pods(demo)
    assert {name for name, _, _ in pods} >= {"gateway", "consumer", "order-backend"}
    for name, pod, container in pods:
        environ = {**links, **container_env(container)}
        if CONFIG_ENV in environ:
            into = tmp_path / name
            into.mkdir()
            config = _mounted_config(demo, pod, container, environ[CONFIG_ENV], into)
            environ[CONFIG_ENV] = str(config)
        settings = load_settings(environ=environ)
        if name in ("gateway", "consumer"):
            assert settings.kafka.bootstrap_servers == "flashgate-kafka-bootstrap:9092", name
            # Redis under Sentinel (redis.yaml): no Service link named REDIS_* bends it.
            redis = settings.redis
            assert (redis.mode, redis.sentinel_master, redis.wait_replicas) == (
                "sentinel",
                "flashgate",
                1,
            ), name
            assert [a.split(".")[0] for a in redis.sentinels] == ["redis-0", "redis-1", "redis-2"]


def test_every_pod_goes_without_service_links(demo: list[Manifest]) -> None:
    for manifest in demo:
        if manifest["kind"] in WORKLOADS:
            pod = manifest["spec"]["template"]["spec"]
            assert pod.get("enableServiceLinks") is False, manifest["metadata"]["name"]


def test_the_autoscaler_alone_sets_the_gateway_replicas(demo: list[Manifest]) -> None:
    gateway = by_kind(demo, "Deployment")["gateway"]
    assert "replicas" not in gateway["spec"]
    hpa = by_kind(demo, "HorizontalPodAutoscaler")["gateway"]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "gateway",
    }

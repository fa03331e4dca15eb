"""What the Kubernetes deploy must hold beyond its schemas: Redis memory bounds, the
headless governing Service, Kafka spread over nodes and zones, network policies,
monitors, probes and pinned images. Offline: the demo overlay rendered by kustomize.
"""

from __future__ import annotations

import re

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
    (redis,) = containers(by_kind(demo, "StatefulSet")["redis"])
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
    # Clients keep a stable virtual IP through `redis` (flashgate.toml's url).
    assert services["redis"]["spec"].get("clusterIP") != "None"


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

"""What the Kubernetes deploy must hold beyond its schemas: Redis memory bounds, the
headless governing Service, Kafka spread over nodes and zones, network policies,
monitors, probes and pinned images. Offline: the demo overlay rendered by kustomize.
"""

from __future__ import annotations

import re

import pytest

from tests.deploy_support import K8S, Manifest, by_kind, containers, kustomize_build

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

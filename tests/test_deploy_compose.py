"""The compose deploy validates against the Compose Specification and holds together.

No Docker engine is needed: the file is checked against the Compose schema,
then for what the deploy promises (3 KRaft brokers with one static quorum,
replicas behind the proxy, settings mounted as a directory, every file it
mounts present, every alert documented in docs/OPERATIONS.md).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from tests.deploy_support import COMPOSE_DIR, COMPOSE_FILE, REPO, Manifest, compose_schema_errors

KAFKA_NODES = ("kafka-1", "kafka-2", "kafka-3")
OPERATIONS = REPO / "docs" / "OPERATIONS.md"


@pytest.fixture(scope="module")
def compose() -> Manifest:
    document: Manifest = yaml.safe_load(COMPOSE_FILE.read_text())
    return document


def _services(compose: Manifest) -> dict[str, Any]:
    services: dict[str, Any] = compose["services"]
    return services


def test_compose_file_matches_the_compose_specification(compose: Manifest) -> None:
    errors = compose_schema_errors(compose)
    assert not errors, "\n".join(errors)


def test_the_schema_check_catches_a_misspelt_key(compose: Manifest) -> None:
    broken = yaml.safe_load(yaml.safe_dump(compose))
    broken["services"]["gateway"]["deploy"]["replica"] = 3
    assert compose_schema_errors(broken)


def test_every_mounted_file_exists(compose: Manifest) -> None:
    for name, service in _services(compose).items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE_DIR / source).exists(), f"{name} mounts missing {source}"
        build = service.get("build")
        if build:
            context = COMPOSE_DIR / build["context"]
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name


def test_three_kraft_brokers_share_one_static_quorum(compose: Manifest) -> None:
    services = _services(compose)
    environments = [services[name]["environment"] for name in KAFKA_NODES]
    voters = {env["KAFKA_CONTROLLER_QUORUM_VOTERS"] for env in environments}
    assert voters == {"1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"}
    assert len({env["CLUSTER_ID"] for env in environments}) == 1
    assert sorted(int(env["KAFKA_NODE_ID"]) for env in environments) == [1, 2, 3]
    for name, env in zip(KAFKA_NODES, environments, strict=True):
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092"
        assert services[name]["image"].startswith("apache/kafka:")
        assert services[name]["volumes"], f"{name} keeps its log on a volume"


def test_replicas_behind_a_proxy_that_checks_readiness(compose: Manifest) -> None:
    services = _services(compose)
    assert services["gateway"]["deploy"]["replicas"] >= 2
    assert "ports" not in services["gateway"], "replicas are reached through the proxy only"
    published = services["proxy"]["ports"]
    assert "8080:8080" in published
    assert "127.0.0.1:8081:8081" in published, "the admin API stays on the host's loopback"
    haproxy = (COMPOSE_DIR / "haproxy" / "haproxy.cfg").read_text()
    assert "option httpchk GET /readyz" in haproxy
    assert re.search(r"server-template \w+ \d+ gateway:8080 .*resolvers docker", haproxy)


def test_settings_are_mounted_as_a_directory(compose: Manifest) -> None:
    for name in ("gateway", "consumer"):
        service = _services(compose)[name]
        assert "./config:/etc/flashgate:ro" in service["volumes"]
        # flashgate.toml by default, flashgate-sentinel.toml with the sentinel profile.
        config = service["environment"]["FLASHGATE_CONFIG"]
        assert config == "/etc/flashgate/${FLASHGATE_SETTINGS:-flashgate.toml}"
        for file in ("flashgate.toml", "flashgate-sentinel.toml"):
            assert (COMPOSE_DIR / "config" / file).is_file()


def test_sentinel_profile_runs_two_replicas_and_three_sentinels(compose: Manifest) -> None:
    services = _services(compose)
    profiled = {name for name, s in services.items() if "sentinel" in s.get("profiles", [])}
    replicas = {"redis-replica-1", "redis-replica-2"}
    sentinels = {"sentinel-1", "sentinel-2", "sentinel-3"}
    assert profiled == replicas | sentinels
    assert "profiles" not in services["redis"]  # the default deploy keeps its one Redis
    for name in replicas:
        command = services[name]["command"]
        assert command[command.index("--replicaof") + 1 :][:2] == ["redis", "6379"], name
        assert command[command.index("--replica-announce-ip") + 1] == name
    for name in sentinels:
        (script,) = services[name]["command"]
        assert f"sentinel announce-ip {name}" in script
        assert "/etc/redis/sentinel.conf" in script
        assert services[name]["depends_on"]["redis"] == {"condition": "service_healthy"}
    conf = (COMPOSE_DIR / "redis" / "sentinel.conf").read_text().splitlines()
    assert "sentinel monitor flashgate redis 6379 2" in conf


def test_prometheus_loads_the_alerts_and_grafana_the_dashboard() -> None:
    prometheus = yaml.safe_load((COMPOSE_DIR / "prometheus" / "prometheus.yml").read_text())
    assert prometheus["rule_files"] == ["/etc/prometheus/alerts.yml"]
    jobs = {job["job_name"] for job in prometheus["scrape_configs"]}
    assert {"gateway", "proxy", "kafka"} <= jobs
    dashboard = json.loads((COMPOSE_DIR / "grafana" / "dashboards" / "flashgate.json").read_text())
    assert dashboard["panels"]
    assert all(panel["targets"] for panel in dashboard["panels"])


def _alert_rules() -> list[dict[str, Any]]:
    rules = yaml.safe_load((COMPOSE_DIR / "prometheus" / "alerts.yml").read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


def test_every_alert_is_well_formed_and_documented() -> None:
    operations = OPERATIONS.read_text()
    rules = _alert_rules()
    assert rules
    for rule in rules:
        assert rule["alert"].startswith("Flashgate"), rule
        assert rule["expr"].strip() and rule["annotations"]["summary"], rule["alert"]
        assert rule["labels"]["severity"] in {"page", "warn"}, rule["alert"]
        assert f"`{rule['alert']}`" in operations, f"{rule['alert']} is not in {OPERATIONS.name}"


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    ignore = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert ignore[0] == "**", "everything is excluded first, then the packages let back in"
    for needed in ("!flashgate/", "!gateway/", "!order_consumer/", "!reference_backend/"):
        assert needed in ignore
    assert not any(entry.startswith("!") and ".venv" in entry for entry in ignore)


def test_every_flashgate_metric_the_alerts_and_dashboard_read_is_exported() -> None:
    # A renamed metric in the gateway must not leave an alert watching nothing.
    exported = "".join(
        (REPO / "gateway" / name).read_text() for name in ("metrics.py", "drain_metrics.py")
    )
    texts = [
        (COMPOSE_DIR / "prometheus" / "alerts.yml").read_text(),
        (COMPOSE_DIR / "grafana" / "dashboards" / "flashgate.json").read_text(),
    ]
    used = {name for text in texts for name in re.findall(r"\bflashgate_[a-z_]+", text)}
    assert used
    for name in used:
        base = re.sub(r"_(total|bucket|sum|count)$", "", name)
        assert f'"{base}"' in exported, f"{name} is not exported by the gateway"


def test_only_the_public_api_is_published_beyond_the_loopback(compose: Manifest) -> None:
    # Compose honours a host address on a published port (Swarm would not: the
    # file says it is for Compose only).
    assert "Compose only, not Swarm" in COMPOSE_FILE.read_text()
    for name, service in _services(compose).items():
        for port in service.get("ports", []):
            if port != "8080:8080":
                assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port}"


def test_grafana_has_no_default_password(compose: Manifest) -> None:
    grafana = _services(compose)["grafana"]
    environment = grafana["environment"]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in environment
    assert environment["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana-admin-password"
    assert grafana["secrets"] == ["grafana-admin-password"]
    secret = compose["secrets"]["grafana-admin-password"]["file"]
    assert secret.startswith("./secrets/")
    assert (COMPOSE_DIR / "secrets" / ".gitignore").read_text().splitlines()[1] == "*"


def test_haproxy_retries_elsewhere_and_keeps_internals_inside() -> None:
    haproxy = (COMPOSE_DIR / "haproxy" / "haproxy.cfg").read_text()
    assert re.search(r"^\s*option redispatch\b", haproxy, re.M)
    assert re.search(r"^\s*retry-on .*\bconn-failure\b", haproxy, re.M)
    assert "http-request deny deny_status 404 unless { path_beg /v1/ }" in haproxy

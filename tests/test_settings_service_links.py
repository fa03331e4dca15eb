"""The settings loader skips the variables Kubernetes injects for Services, and only those.

Strimzi's cluster `flashgate` makes the Service `flashgate-kafka-bootstrap`, so
every pod of the namespace gets FLASHGATE_KAFKA_BOOTSTRAP_SERVICE_HOST and the
like; a mistyped setting must still stop the process with its name.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flashgate.errors import ConfigError
from flashgate.service_links import is_service_link
from flashgate.settings import load_settings
from tests.pod_env import Manifest, service_link_variables

BOOTSTRAP: Manifest = {
    "metadata": {"name": "flashgate-kafka-bootstrap"},
    "spec": {
        "ports": [
            {"name": "tcp-replication", "port": 9091},
            {"name": "tcp-clients", "port": 9092, "protocol": "TCP"},
        ]
    },
}
UNNAMED_UDP: Manifest = {
    "metadata": {"name": "flashgate"},
    "spec": {"ports": [{"port": 53, "protocol": "UDP"}]},
}


@pytest.fixture
def empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.toml"
    path.write_text("")
    return path


@pytest.mark.parametrize("cluster_ip", ["10.96.0.12", "fd00:10:96::c"])
def test_strimzi_bootstrap_links_are_skipped(empty: Path, cluster_ip: str) -> None:
    links = service_link_variables(BOOTSTRAP, cluster_ip)
    assert links["FLASHGATE_KAFKA_BOOTSTRAP_SERVICE_HOST"] == cluster_ip
    assert "FLASHGATE_KAFKA_BOOTSTRAP_SERVICE_PORT_TCP_CLIENTS" in links
    assert "FLASHGATE_KAFKA_BOOTSTRAP_PORT_9092_TCP_ADDR" in links
    environ = {**links, "FLASHGATE_KAFKA_BOOTSTRAP_SERVERS": "flashgate-kafka-bootstrap:9092"}
    settings = load_settings(empty, environ=environ)
    assert settings.kafka.bootstrap_servers == "flashgate-kafka-bootstrap:9092"


def test_a_service_named_like_the_prefix_alone_is_skipped(empty: Path) -> None:
    links = service_link_variables(UNNAMED_UDP, "10.96.0.9")
    assert set(links) == {
        "FLASHGATE_SERVICE_HOST",
        "FLASHGATE_SERVICE_PORT",
        "FLASHGATE_PORT",
        "FLASHGATE_PORT_53_UDP",
        "FLASHGATE_PORT_53_UDP_PROTO",
        "FLASHGATE_PORT_53_UDP_PORT",
        "FLASHGATE_PORT_53_UDP_ADDR",
    }
    assert load_settings(empty, environ=links) == load_settings(empty, environ={})


@pytest.mark.parametrize(
    "name",
    [
        # A typo of a real key, beside real service links.
        "FLASHGATE_KAFKA_BOOTSTRAP_SERVRS",
        # Service-link shapes without the Service they would belong to.
        "FLASHGATE_GATEWAYS_PORT",
        "FLASHGATE_KAFKA_SERVICE_HOST",
        "FLASHGATE_REDIS_SERVICE_PORT",
    ],
)
def test_a_mistyped_key_is_still_refused_by_name(empty: Path, name: str) -> None:
    links = service_link_variables(BOOTSTRAP, "10.96.0.12")
    values = {
        "FLASHGATE_KAFKA_BOOTSTRAP_SERVRS": "kafka:9092",
        "FLASHGATE_GATEWAYS_PORT": "tcp://10.96.0.12:9092",
        "FLASHGATE_KAFKA_SERVICE_HOST": "10.96.0.12",
        "FLASHGATE_REDIS_SERVICE_PORT": "6379",
    }
    with pytest.raises(ConfigError, match=name):
        load_settings(empty, environ={**links, name: values[name]})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        # Each is a service-link name of the bootstrap Service, with a value kubelet
        # never writes there: someone set it by hand.
        ("FLASHGATE_KAFKA_BOOTSTRAP_PORT", "9092"),
        ("FLASHGATE_KAFKA_BOOTSTRAP_PORT_9092_TCP", "tcp://10.96.0.12:9093"),
        ("FLASHGATE_KAFKA_BOOTSTRAP_PORT_9092_TCP", "tcp://10.96.0.13:9092"),
        ("FLASHGATE_KAFKA_BOOTSTRAP_PORT_9092_TCP_PROTO", "udp"),
        ("FLASHGATE_KAFKA_BOOTSTRAP_PORT_9092_TCP_PORT", "9093"),
        ("FLASHGATE_KAFKA_BOOTSTRAP_PORT_9092_TCP_ADDR", "kafka"),
        ("FLASHGATE_KAFKA_BOOTSTRAP_SERVICE_PORT_TCP_CLIENTS", "many"),
    ],
)
def test_a_link_name_with_a_value_kubelet_never_writes_is_refused(
    empty: Path, name: str, value: str
) -> None:
    environ = {**service_link_variables(BOOTSTRAP, "10.96.0.12"), name: value}
    assert not is_service_link(name, environ)
    with pytest.raises(ConfigError, match=name):
        load_settings(empty, environ=environ)


def test_the_host_needs_its_port_and_an_address(empty: Path) -> None:
    host_only = {"FLASHGATE_KAFKA_BOOTSTRAP_SERVICE_HOST": "10.96.0.12"}
    with pytest.raises(ConfigError, match="FLASHGATE_KAFKA_BOOTSTRAP_SERVICE_HOST"):
        load_settings(empty, environ=host_only)
    not_an_ip = {
        "FLASHGATE_KAFKA_BOOTSTRAP_SERVICE_HOST": "kafka.local",
        "FLASHGATE_KAFKA_BOOTSTRAP_SERVICE_PORT": "9092",
    }
    with pytest.raises(ConfigError, match="FLASHGATE_KAFKA_BOOTSTRAP_SERVICE_"):
        load_settings(empty, environ=not_an_ip)


def test_a_real_key_is_never_taken_for_a_link(empty: Path) -> None:
    # A Service named `flashgate-gateway` would inject FLASHGATE_GATEWAY_PORT, a real
    # key: it is read as the setting (and its URL value fails), never skipped.
    gateway_service: Manifest = {
        "metadata": {"name": "flashgate-gateway"},
        "spec": {"ports": [{"name": "http", "port": 8080}]},
    }
    links = service_link_variables(gateway_service, "10.96.0.20")
    with pytest.raises(ConfigError, match=r"gateway\.port"):
        load_settings(empty, environ=links)

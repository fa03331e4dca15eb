"""The secured compose variant (compose.yaml + compose.secured.yaml) holds together.

No Docker engine is needed. The override file alone and the document compose
runs (both files merged by the Compose Specification's rules) validate against
the Compose schema; the brokers' listener settings agree with what the gateway
and consumer load through flashgate's own settings loader (protocol,
mechanism, user, port, password and CA files); every other Kafka client of the
deploy (healthcheck, kafka-init, exporter) authenticates too; and the one-shot
service's script really makes, with keytool and openssl, a CA and broker
keystores whose certificates name the brokers' host names.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from flashgate.settings import Settings, load_settings
from tests.deploy_support import (
    COMPOSE_DIR,
    COMPOSE_FILE,
    COMPOSE_SECURED_FILE,
    Manifest,
    ToolMissing,
    compose_merged,
    compose_schema_errors,
    settings_env_names,
)

COMPOSE_TOML = COMPOSE_DIR / "config" / "flashgate.toml"
MAKE_TLS = COMPOSE_DIR / "kafka-tls" / "make-tls.sh"
BROKERS = ("kafka-1", "kafka-2", "kafka-3")
CLIENTS = ("gateway", "consumer")
SECRET = "kafka-flashgate-password"
SCRIPT_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def override() -> Manifest:
    document: Manifest = yaml.safe_load(COMPOSE_SECURED_FILE.read_text())
    return document


@pytest.fixture(scope="module")
def merged() -> Manifest:
    return compose_merged(COMPOSE_FILE, COMPOSE_SECURED_FILE)


def _services(document: Manifest) -> dict[str, Any]:
    services: dict[str, Any] = document["services"]
    return services


def _interpolated(text: str) -> str:
    """A value as the container sees it: `${VAR...}` filled by compose from the host's
    environment (any value stands in), `$$` unescaped to `$`."""
    return re.sub(r"(?<!\$)\$\{[^}]*\}", "from-the-environment", text).replace("$$", "$")


def _env(service: dict[str, Any]) -> dict[str, str]:
    return {name: _interpolated(str(value)) for name, value in service["environment"].items()}


def _settings(service: dict[str, Any]) -> Settings:
    return load_settings(COMPOSE_TOML, environ=_env(service))


def _listeners(value: str) -> dict[str, tuple[str, int]]:
    """`NAME://host:port,...` -> name -> (host, port)."""
    found: dict[str, tuple[str, int]] = {}
    for listener in value.split(","):
        name, _, address = listener.partition("://")
        host, _, port = address.rpartition(":")
        found[name] = (host, int(port))
    return found


def _protocol_map(value: str) -> dict[str, str]:
    return dict(pair.split(":") for pair in value.split(","))


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> volume (or host path) of a service's short-syntax volumes."""
    return {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", [])}


def test_the_override_and_the_merged_file_match_the_compose_specification(
    override: Manifest, merged: Manifest
) -> None:
    for document in (override, merged):
        errors = compose_schema_errors(document)
        assert not errors, "\n".join(errors)


def test_the_merge_keeps_the_plain_deploy_and_secures_it(merged: Manifest) -> None:
    plain = _services(yaml.safe_load(COMPOSE_FILE.read_text()))
    services = _services(merged)
    assert set(services) == set(plain) | {"kafka-tls"}
    for name in BROKERS:
        # The base's data volume stays; the TLS volume comes in read-only.
        assert _mounts(services[name])["/var/lib/kafka/data"] == f"{name}-data"
        assert "kafka-tls:/etc/kafka/secrets:ro" in services[name]["volumes"]
        assert services[name]["image"] == plain[name]["image"]
    for name in CLIENTS:
        assert "./config:/etc/flashgate:ro" in services[name]["volumes"]
        # The base's choice of settings file (plain, or the sentinel profile's) stands.
        config = services[name]["environment"]["FLASHGATE_CONFIG"]
        assert config == plain[name]["environment"]["FLASHGATE_CONFIG"]


def test_brokers_listen_only_on_sasl_ssl_and_talk_to_each_other_over_tls(
    merged: Manifest,
) -> None:
    services = _services(merged)
    for name in BROKERS:
        env = _env(services[name])
        listeners = _listeners(env["KAFKA_LISTENERS"])
        protocols = _protocol_map(env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"])
        assert set(listeners) == {"SASL_SSL", "CONTROLLER"}
        assert protocols == {"SASL_SSL": "SASL_SSL", "CONTROLLER": "SSL"}
        assert "PLAINTEXT" not in protocols.values(), "no plaintext listener is left"
        assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] == "SASL_SSL"
        assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
        # The quorum voters' port is the controller listener's, now over TLS.
        voter_ports = {
            int(v.rpartition(":")[2]) for v in env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
        }
        assert voter_ports == {listeners["CONTROLLER"][1]}
        assert _listeners(env["KAFKA_ADVERTISED_LISTENERS"]) == {
            "SASL_SSL": (name, listeners["SASL_SSL"][1])
        }
        assert env["KAFKA_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
        assert env["KAFKA_SASL_MECHANISM_INTER_BROKER_PROTOCOL"] == "SCRAM-SHA-512"
        assert env["KAFKA_SSL_KEYSTORE_FILENAME"] == f"{name}.p12"
        assert env["KAFKA_SSL_TRUSTSTORE_LOCATION"] == "/etc/kafka/secrets/ca.pem"
        assert "/etc/kafka/secrets/broker_jaas.conf" in env["KAFKA_OPTS"]
        assert services[name]["depends_on"]["kafka-tls"] == {
            "condition": "service_completed_successfully"
        }


def _client_disagreements(merged: Manifest) -> list[str]:
    """Where the settings the gateway and consumer load differ from what the brokers
    serve (protocol, mechanism, addresses and ports) or from the files mounted for them."""
    services = _services(merged)
    found: list[str] = []
    for name in CLIENTS:
        service = services[name]
        kafka = _settings(service).kafka
        bootstrap = {
            (host, int(port))
            for host, _, port in (a.rpartition(":") for a in kafka.bootstrap_servers.split(","))
        }
        served: set[tuple[str, int]] = set()
        for broker in BROKERS:
            env = _env(services[broker])
            protocols = _protocol_map(env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"])
            bound = _listeners(env["KAFKA_LISTENERS"])
            for listener, (host, port) in _listeners(env["KAFKA_ADVERTISED_LISTENERS"]).items():
                if protocols[listener] != kafka.security_protocol:
                    found.append(f"{name}: {kafka.security_protocol}, {broker}: {listener}")
                if bound.get(listener, ("", 0))[1] != port:
                    found.append(f"{broker}: {listener} advertised on {port}, bound elsewhere")
                served.add((host, port))
            if kafka.sasl_mechanism not in env["KAFKA_SASL_ENABLED_MECHANISMS"].split(","):
                found.append(f"{name}: {kafka.sasl_mechanism}, {broker}: not enabled")
        if bootstrap != served:
            found.append(f"{name}: bootstrap {sorted(bootstrap)}, brokers serve {sorted(served)}")
        if kafka.sasl_password_file != f"/run/secrets/{SECRET}" or SECRET not in service["secrets"]:
            found.append(f"{name}: the password file is not the secret {SECRET}")
        ca_dir = str(Path(kafka.ssl_ca_location).parent)
        if _mounts(service).get(ca_dir) != "kafka-ca":
            found.append(f"{name}: the CA {kafka.ssl_ca_location} is not in the kafka-ca volume")
    return found


def test_gateway_and_consumer_load_sasl_ssl_settings_that_match_the_brokers(
    merged: Manifest,
) -> None:
    services = _services(merged)
    for name in CLIENTS:
        assert {n for n in _env(services[name]) if n.startswith("FLASHGATE_")} <= (
            settings_env_names()
        )
        kafka = _settings(services[name]).kafka
        assert kafka.security_protocol == "SASL_SSL"
        assert kafka.sasl_mechanism == "SCRAM-SHA-512"
        assert kafka.sasl_username == "flashgate"
        assert not kafka.sasl_password, "the password comes from the secret file only"
        assert f"kafka-ca:{Path(kafka.ssl_ca_location).parent}:ro" in services[name]["volumes"]
    assert _client_disagreements(merged) == []


def test_the_agreement_check_catches_a_mismatch(merged: Manifest) -> None:
    mechanism = yaml.safe_load(yaml.safe_dump(merged))
    mechanism["services"]["gateway"]["environment"]["FLASHGATE_KAFKA_SASL_MECHANISM"] = (
        "SCRAM-SHA-256"
    )
    assert _client_disagreements(mechanism) == [
        f"gateway: SCRAM-SHA-256, {broker}: not enabled" for broker in BROKERS
    ]
    port = yaml.safe_load(yaml.safe_dump(merged))
    broker = port["services"]["kafka-2"]["environment"]
    broker["KAFKA_LISTENERS"] = broker["KAFKA_LISTENERS"].replace(":9092", ":9094")
    broker["KAFKA_ADVERTISED_LISTENERS"] = "SASL_SSL://kafka-2:9094"
    assert [m for m in _client_disagreements(port) if "bootstrap" in m] == [
        "gateway: bootstrap [('kafka-1', 9092), ('kafka-2', 9092), ('kafka-3', 9092)], "
        "brokers serve [('kafka-1', 9092), ('kafka-2', 9094), ('kafka-3', 9092)]",
        "consumer: bootstrap [('kafka-1', 9092), ('kafka-2', 9092), ('kafka-3', 9092)], "
        "brokers serve [('kafka-1', 9092), ('kafka-2', 9094), ('kafka-3', 9092)]",
    ]
    plaintext = yaml.safe_load(yaml.safe_dump(merged))
    plaintext["services"]["kafka-3"]["environment"]["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"] = (
        "CONTROLLER:SSL,SASL_SSL:PLAINTEXT"
    )
    assert "gateway: SASL_SSL, kafka-3: SASL_SSL" in _client_disagreements(plaintext)


def test_the_plain_deploy_still_loads_plaintext_settings() -> None:
    plain = _services(yaml.safe_load(COMPOSE_FILE.read_text()))
    for name in CLIENTS:
        assert _settings(plain[name]).kafka.security_protocol == "PLAINTEXT"


def _add_scram(command: str) -> dict[str, str]:
    """The storage tool's `--add-scram MECHANISM=[name=N,password=P]` -> name -> password."""
    users: dict[str, str] = {}
    words = shlex.split(command.replace("\\\n", " "))
    for flag, value in itertools.pairwise(words):
        if flag == "--add-scram":
            mechanism, _, body = value.partition("=[")
            assert mechanism == "SCRAM-SHA-512", value
            fields = dict(part.split("=", 1) for part in body.rstrip("]").split(","))
            users[fields["name"]] = fields["password"]
    return users


def test_brokers_create_the_scram_user_flashgate_connects_as(merged: Manifest) -> None:
    services = _services(merged)
    client = _settings(services["gateway"]).kafka
    for name in BROKERS:
        broker = services[name]
        assert broker["entrypoint"] == ["/bin/bash", "-ec"]
        (script,) = broker["command"]
        script = _interpolated(script)
        assert "kafka-storage.sh format --ignore-formatted" in script
        assert script.rstrip().endswith("exec /etc/kafka/docker/run")
        users = _add_scram(script)
        assert set(users) == {client.sasl_username, "broker"}
        # The same secret flashgate reads its password from; the broker's from the TLS volume.
        assert users[client.sasl_username] == f"$(cat {client.sasl_password_file})"
        assert users["broker"] == "$(cat /etc/kafka/secrets/broker-password)"
        assert SECRET in broker["secrets"]


def test_every_other_kafka_client_of_the_deploy_authenticates(merged: Manifest) -> None:
    services = _services(merged)
    for name in BROKERS:
        (probe,) = [t for t in services[name]["healthcheck"]["test"] if "kafka-" in t]
        assert "--command-config /etc/kafka/secrets/client.properties" in probe
    lines = [
        line for line in services["kafka-init"]["command"][0].splitlines() if "kafka-topics" in line
    ]
    assert len(lines) == 2
    assert all("--command-config /etc/kafka/secrets/client.properties" in line for line in lines)
    assert "kafka-tls:/etc/kafka/secrets:ro" in services["kafka-init"]["volumes"]
    (exporter,) = services["kafka-exporter"]["command"]
    for flag in (
        "--sasl.enabled",
        "--sasl.mechanism=scram-sha512",
        "--sasl.username=flashgate",
        f'--sasl.password="$$(cat /run/secrets/{SECRET})"',
        "--tls.enabled",
        "--tls.ca-file=/etc/kafka-ca/ca.pem",
    ):
        assert flag in exporter, flag
    assert _mounts(services["kafka-exporter"])["/etc/kafka-ca"] == "kafka-ca"


def test_the_topics_are_the_plain_deploys(merged: Manifest) -> None:
    plain = _services(yaml.safe_load(COMPOSE_FILE.read_text()))["kafka-init"]["command"][0]
    secured = _services(merged)["kafka-init"]["command"][0]
    option = " --command-config /etc/kafka/secrets/client.properties"
    assert secured.replace(option, "") == plain


def test_the_password_is_a_secret_file_outside_git(merged: Manifest) -> None:
    secret = merged["secrets"][SECRET]["file"]
    assert secret == f"./secrets/{SECRET}"
    ignored = (COMPOSE_DIR / "secrets" / ".gitignore").read_text().splitlines()
    assert "*" in ignored and f"!{SECRET}" not in ignored
    text = COMPOSE_SECURED_FILE.read_text()
    assert "openssl rand -hex 24 > secrets/kafka-flashgate-password" in text
    for name, service in _services(merged).items():
        for key in service.get("environment", {}):
            assert "PASSWORD" not in key or key.endswith("_FILE"), (name, key)
    # Only the one-shot service mounts the CA's key; flashgate's containers see the CA alone.
    holders = {n for n, s in _services(merged).items() if "kafka-tls-ca" in _mounts(s).values()}
    assert holders == {"kafka-tls"}
    for name in CLIENTS:
        assert "kafka-tls" not in _mounts(_services(merged)[name]).values()


def test_the_tls_service_runs_the_script_for_every_broker(merged: Manifest) -> None:
    service = _services(merged)["kafka-tls"]
    assert service["restart"] == "no"
    assert service["image"] == _services(merged)["kafka-1"]["image"]
    assert _mounts(service)["/opt/flashgate/make-tls.sh"] == "./kafka-tls/make-tls.sh"
    assert (COMPOSE_DIR / "kafka-tls" / "make-tls.sh").is_file()
    assert service["environment"]["BROKERS"].split() == list(BROKERS)
    mounts = _mounts(service)
    # The script's default directories are these volumes.
    script = MAKE_TLS.read_text()
    for variable, volume in (
        ("CA_DIR", "kafka-tls-ca"),
        ("TLS_DIR", "kafka-tls"),
        ("PUBLIC_DIR", "kafka-ca"),
    ):
        (default,) = re.findall(rf"^{variable}=\$\{{{variable}:-([^}}]+)\}}", script, re.M)
        assert mounts[default] == volume, variable


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ToolMissing(f"{name} is needed: apt-get install openjdk-17-jre-headless openssl")
    return path


def _run_make_tls(root: Path) -> None:
    env = {
        **os.environ,
        "CA_DIR": str(root / "ca"),
        "TLS_DIR": str(root / "tls"),
        "PUBLIC_DIR": str(root / "public"),
        "BROKERS": " ".join(BROKERS),
        # Run as root, the script hands the files to the brokers' user (the image's appuser).
        "OWNER": "root",
    }
    result = subprocess.run(
        ["bash", str(MAKE_TLS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_script_makes_keystores_the_brokers_and_clients_can_use(tmp_path: Path) -> None:
    _tool("keytool")
    openssl = _tool("openssl")
    _run_make_tls(tmp_path)
    tls, public = tmp_path / "tls", tmp_path / "public"
    password = (tls / "keystore-password").read_text().strip()
    assert re.fullmatch(r"[0-9a-f]{48}", password)
    assert (public / "ca.pem").read_bytes() == (tls / "ca.pem").read_bytes()
    assert sorted(p.name for p in public.iterdir()) == ["ca.pem"], "the CA alone, no key"
    for private in ("keystore-password", "broker-password", "broker_jaas.conf", "kafka-1.p12"):
        assert (tls / private).stat().st_mode & 0o077 == 0, private
    for broker in BROKERS:
        certificate = tmp_path / f"{broker}.pem"
        exported = subprocess.run(
            [openssl, "pkcs12", "-in", str(tls / f"{broker}.p12"), "-nokeys", "-clcerts",
             "-passin", f"pass:{password}", "-out", str(certificate)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert exported.returncode == 0, exported.stderr
        verified = subprocess.run(
            [openssl, "verify", "-CAfile", str(public / "ca.pem"), str(certificate)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert verified.returncode == 0, verified.stdout + verified.stderr
        names = subprocess.run(
            [openssl, "x509", "-in", str(certificate), "-noout", "-ext", "subjectAltName"],
            capture_output=True, text=True, timeout=60, check=False,
        ).stdout  # fmt: skip
        assert f"DNS:{broker}" in names and "DNS:localhost" in names
    properties = dict(
        line.split("=", 1) for line in (tls / "client.properties").read_text().splitlines()
    )
    assert properties["security.protocol"] == "SASL_SSL"
    assert properties["sasl.mechanism"] == "SCRAM-SHA-512"
    broker_password = (tls / "broker-password").read_text().strip()
    assert f'username="broker" password="{broker_password}";' in properties["sasl.jaas.config"]
    assert properties["sasl.jaas.config"] in (tls / "broker_jaas.conf").read_text()
    # A second run (a restarted `docker compose up`) keeps every key and certificate.
    before = {p.name: p.read_bytes() for p in tls.iterdir()}
    _run_make_tls(tmp_path)
    assert {p.name: p.read_bytes() for p in tls.iterdir()} == before

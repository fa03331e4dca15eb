"""One Apache Kafka broker in KRaft combined mode (broker + controller) from Maven jars.

Storage is formatted once (`StorageTool format --ignore-formatted` is safe to
re-run), then `kafka.Kafka` starts with a small heap. Several instances with a
shared voter list make a multi-broker cluster.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flashgate.errors import StackError
from flashgate.stack.kafka_jars import kafka_classpath
from flashgate.stack.kafka_security import BrokerSecurity
from flashgate.stack.ports import ensure_free, wait_for_port
from flashgate.stack.process import ManagedProcess

HOST = "127.0.0.1"
FORMAT_TIMEOUT_S = 120
# G1 settings from Kafka's own start scripts, with a heap sized for tests and demos.
JVM_FLAGS = [
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
]


@dataclass(frozen=True)
class BrokerSpec:
    node_id: int
    port: int
    controller_port: int


@dataclass
class KafkaBroker:
    """A broker process; `voters` lists every node of the cluster (itself included)."""

    spec: BrokerSpec
    data_dir: Path
    libs_dir: Path
    heap_mb: int = 512
    voters: Sequence[BrokerSpec] = ()
    cluster_id: str = ""
    overrides: dict[str, str] = field(default_factory=dict)
    # Port clients are told to use (`advertised.listeners`) while the broker binds
    # `spec.port`: a proxy in front (tests/kafka_stall_proxy.py) then carries every
    # client connection. None advertises the bound port.
    advertised_port: int | None = None
    # A secured client listener (SASL_SSL or mutual TLS) instead of PLAINTEXT.
    security: BrokerSecurity | None = None
    _process: ManagedProcess | None = None

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.advertised_port or self.spec.port}"

    @property
    def process(self) -> ManagedProcess | None:
        return self._process

    def _all_voters(self) -> Sequence[BrokerSpec]:
        return self.voters or (self.spec,)

    def properties(self) -> dict[str, str]:
        voters = self._all_voters()
        replication = str(min(3, len(voters)))
        min_isr = "2" if len(voters) >= 3 else "1"
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.spec.node_id),
            "controller.quorum.voters": ",".join(
                f"{v.node_id}@{HOST}:{v.controller_port}" for v in voters
            ),
            "listeners": f"PLAINTEXT://{HOST}:{self.spec.port},"
            f"CONTROLLER://{HOST}:{self.spec.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.bootstrap}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir / "logs"),
            "num.partitions": "1",
            "default.replication.factor": replication,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": replication,
            "offsets.topic.num.partitions": "6",
            "transaction.state.log.replication.factor": replication,
            "transaction.state.log.min.isr": min_isr,
            "transaction.state.log.num.partitions": "6",
            "share.coordinator.state.topic.replication.factor": replication,
            "share.coordinator.state.topic.min.isr": min_isr,
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
            "log.retention.check.interval.ms": "60000",
            "auto.create.topics.enable": "false",
        }
        if self.security is not None:
            props.update(
                self.security.broker_properties(
                    HOST, self.spec.port, self.spec.controller_port, self.bootstrap
                )
            )
        props.update(self.overrides)
        return props

    def _properties_path(self) -> Path:
        return self.data_dir / "server.properties"

    def _java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise StackError("a Java runtime is needed for Kafka: apt-get install openjdk-17-jre")
        return java

    def format_storage(self) -> None:
        """Write server.properties and format the log directory (idempotent)."""
        if not self.cluster_id:
            raise StackError("a cluster id is needed to format Kafka's storage")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        text = "".join(f"{key}={value}\n" for key, value in self.properties().items())
        self._properties_path().write_text(text)
        # It may hold the keystore's and the broker's SCRAM passwords.
        self._properties_path().chmod(0o600)
        command = [
            self._java(),
            "-Xmx256m",
            "-cp",
            kafka_classpath(self.libs_dir),
            "kafka.tools.StorageTool",
            "format",
            "-t",
            self.cluster_id,
            "-c",
            str(self._properties_path()),
            "--ignore-formatted",
            *(self.security.format_args() if self.security else []),
        ]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=FORMAT_TIMEOUT_S, check=False
        )
        if result.returncode != 0:
            output = result.stdout + result.stderr
            for secret in self.security.passwords() if self.security else []:
                output = output.replace(secret, "***")
            raise StackError(f"formatting Kafka storage failed:\n{output}")

    def start(self, log_path: Path, pid_path: Path | None = None) -> None:
        ensure_free(f"Kafka broker {self.spec.node_id}", HOST, self.spec.port)
        ensure_free(f"Kafka controller {self.spec.node_id}", HOST, self.spec.controller_port)
        argv = [
            self._java(),
            f"-Xms{self.heap_mb}m",
            f"-Xmx{self.heap_mb}m",
            *JVM_FLAGS,
            "-cp",
            kafka_classpath(self.libs_dir),
            "kafka.Kafka",
            str(self._properties_path()),
        ]
        self._process = ManagedProcess(
            f"kafka-{self.spec.node_id}", argv, log_path=log_path, pid_path=pid_path
        )
        self._process.start()

    def wait_listening(self, timeout_s: float = 90.0) -> None:
        wait_for_port(f"Kafka broker {self.spec.node_id}", HOST, self.spec.port, timeout_s)

    def stop(self, timeout_s: float = 30.0) -> None:
        if self._process is not None:
            self._process.stop(timeout_s)

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()


def new_cluster_id(libs_dir: Path) -> str:
    """A fresh KRaft cluster id from Kafka's own StorageTool."""
    java = shutil.which("java") or "java"
    result = subprocess.run(
        [java, "-cp", kafka_classpath(libs_dir), "kafka.tools.StorageTool", "random-uuid"],
        capture_output=True,
        text=True,
        timeout=FORMAT_TIMEOUT_S,
        check=False,
    )
    cluster_id = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    if result.returncode != 0 or not cluster_id:
        raise StackError(f"cannot generate a Kafka cluster id: {result.stderr.strip()}")
    return cluster_id

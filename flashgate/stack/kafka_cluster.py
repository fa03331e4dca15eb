"""A local N-node Apache Kafka cluster (KRaft, static quorum) built from `KafkaBroker`s.

Every node runs broker and controller in one JVM, and every node lists all
nodes in `controller.quorum.voters`, so the quorum is static: each node's
storage is formatted with the same cluster id and none of `--standalone`,
`--initial-controllers` or `--no-initial-controllers`. With three nodes the
brokers' own properties set replication 3 and `min.insync.replicas=2` for the
internal topics, the settings the compose and Kubernetes deploys use. With a
`BrokerSecurity` every node's client and inter-broker listener is secured the
same way (one certificate for 127.0.0.1 serves every node; every node's
storage gets the same SCRAM users), so replication runs over TLS.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from flashgate.stack.kafka_broker import BrokerSpec, KafkaBroker, new_cluster_id
from flashgate.stack.kafka_security import BrokerSecurity
from flashgate.stack.ports import free_port

DEFAULT_HEAP_MB = 320


def distinct_free_ports(count: int) -> list[int]:
    """`count` free ports, all different (the OS may hand out a just-released one twice)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


@dataclass
class KafkaCluster:
    """Several brokers sharing one voter list; start, stop and kill them as a group."""

    brokers: Sequence[KafkaBroker]
    root: Path
    _started: list[KafkaBroker] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        size: int,
        root: Path,
        libs_dir: Path,
        *,
        heap_mb: int = DEFAULT_HEAP_MB,
        overrides: dict[str, str] | None = None,
        security: BrokerSecurity | None = None,
    ) -> KafkaCluster:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        ports = distinct_free_ports(2 * size)
        specs = [BrokerSpec(i + 1, ports[2 * i], ports[2 * i + 1]) for i in range(size)]
        cluster_id = new_cluster_id(libs_dir)
        brokers = [
            KafkaBroker(
                spec,
                data_dir=root / f"node-{spec.node_id}",
                libs_dir=libs_dir,
                heap_mb=heap_mb,
                voters=specs,
                cluster_id=cluster_id,
                overrides=dict(overrides or {}),
                security=security,
            )
            for spec in specs
        ]
        return cls(brokers=brokers, root=root)

    @property
    def bootstrap(self) -> str:
        return ",".join(broker.bootstrap for broker in self.brokers)

    def broker(self, node_id: int) -> KafkaBroker:
        for broker in self.brokers:
            if broker.spec.node_id == node_id:
                return broker
        raise KeyError(f"no node {node_id} in this cluster")

    def start(self, timeout_s: float = 90.0) -> None:
        """Format every node's storage (in parallel: one JVM each), start all, wait for all."""
        with ThreadPoolExecutor(max_workers=len(self.brokers)) as pool:
            for future in [pool.submit(b.format_storage) for b in self.brokers]:
                future.result()
        for broker in self.brokers:
            broker.start(self.root / f"node-{broker.spec.node_id}.log")
            self._started.append(broker)
        # Ports open before the quorum has elected a leader: callers that need a
        # working cluster also wait for metadata (flashgate.kafka.topics.wait_for_broker).
        for broker in self.brokers:
            broker.wait_listening(timeout_s)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop every node that was started, even when one of them fails to stop."""
        errors: list[BaseException] = []
        for broker in reversed(self._started):
            try:
                broker.stop(timeout_s)
            except Exception as exc:  # keep stopping the others; report the first
                errors.append(exc)
        self._started.clear()
        if errors:
            raise errors[0]

    def kill(self) -> None:
        """SIGKILL every started node: for throwaway clusters, where a node left
        without a quorum would otherwise wait out its controlled shutdown."""
        for broker in self._started:
            broker.kill()
        self._started.clear()

    def log_tails(self, lines: int = 15) -> str:
        tails = []
        for broker in self.brokers:
            process = broker.process
            if process is not None:
                tails.append(f"--- node {broker.spec.node_id} ---\n{process.log_tail(lines)}")
        return "\n".join(tails)

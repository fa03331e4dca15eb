"""Redis failovers mid-burst: the primary holding the sale is SIGKILLed.

Two topologies: a Redis Cluster (the primary of the sale's slot) and Sentinel
(a primary, one replica, three sentinels).

Retrying storefront clients buy a sale whose demand is twice its stock; once
some orders are accepted, the primary serving the sale's slot is killed and its
replica takes over (cluster-node-timeout 2 s), and the killed node is restarted
(it rejoins as the new primary's replica). Then every 202 is reconciled:
none lost, none stored twice, and the units the backend stored per SKU never
above the stock loaded. With `wait_replicas = 1` an acknowledged admission was
on the replica before the answer, so the promoted replica cannot sell its units
again; the row with 0 shows what that buys. Figures go to $CHAOS_RESULTS.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flashgate.admission.keys import SaleKeys
from flashgate.errors import StackError
from flashgate.stack.kafka_broker import KafkaBroker
from flashgate.stack.ports import free_port
from flashgate.stack.redis_cluster import RedisClusterNodes, wait_until
from flashgate.stack.redis_sentinel import RedisSentinelNodes
from flashgate.stack.redis_server import RedisServer
from tests.chaos_support import reconcile, start_burst, wait_accepted
from tests.services import ServiceEnv, Services, admin_json, load_sale

pytestmark = pytest.mark.chaos

SKUS = 4
UNITS_PER_SKU = 300
BUYERS = 2 * SKUS * UNITS_PER_SKU  # demand twice the stock: the sale sells out
FAULT_AFTER = 300
BURST_TIMEOUT_S = 180.0
# Above the sum of a scenario's own bounds (its Redis nodes' and the processes' start,
# 60 s for the first orders, promotion 60 s + restart 20 s + rejoin 60 s, the burst,
# the reconciliation's 120 s), so it fails on its own bound with its own message
# rather than on the project's shorter global limit.
SCENARIO_TIMEOUT_S = 90 + 3 * 30 + 60 + (60 + 20 + 60) + BURST_TIMEOUT_S + 120 + 60
SALE = "failover"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisClusterNodes]:
    """A cluster of its own: this test kills one of its primaries."""
    nodes = RedisClusterNodes(
        [free_port() for _ in range(6)], [free_port() for _ in range(6)], tmp_path / "redis"
    )
    try:
        nodes.start(tmp_path / "redis-logs")
        yield nodes
    finally:
        nodes.stop()


@pytest.mark.parametrize("wait_replicas", [1, 0], ids=["wait-1", "wait-0"])
@pytest.mark.timeout(SCENARIO_TIMEOUT_S)
def test_cluster_sale_primary_sigkill_mid_burst(
    kafka_broker: KafkaBroker, cluster: RedisClusterNodes, tmp_path: Path, wait_replicas: int
) -> None:
    env = _env(tmp_path, kafka_broker, cluster.url, wait_replicas)
    env.variables["FLASHGATE_REDIS_MODE"] = "cluster"
    key = SaleKeys.of(SALE).core[0]
    victim_port = cluster.primary_of(key)
    victim = next(server for server in cluster.servers if server.port == victim_port)

    def promoted() -> bool:
        try:
            return cluster.primary_of(key) != victim_port and cluster.slots_ok(cluster.live_port())
        except StackError:  # no primary for the slot yet
            return False

    def recover() -> None:
        wait_until(promoted, 60, "the replica's promotion")
        mark("promoted")
        # The promoted replica has no replica of its own: with wait_replicas = 1 its
        # sales answer 503 until the old primary is back, as its replica.
        victim.start(tmp_path / "redis-logs" / "victim-restarted.log")
        victim.wait_listening()
        wait_until(cluster.replicas_linked, 60, "the old primary's return as a replica")
        mark("rejoined")

    marks: dict[str, float] = {}
    mark = _marker(marks)
    _failover_mid_burst(
        f"Redis Cluster primary SIGKILL, wait_replicas={wait_replicas}",
        env, kafka_broker, tmp_path, victim, recover, marks,
    )  # fmt: skip


@pytest.mark.parametrize("wait_replicas", [1, 0], ids=["wait-1", "wait-0"])
@pytest.mark.timeout(SCENARIO_TIMEOUT_S)
def test_sentinel_failover_mid_burst(
    kafka_broker: KafkaBroker, tmp_path: Path, wait_replicas: int
) -> None:
    nodes = RedisSentinelNodes(
        [free_port() for _ in range(2)], [free_port() for _ in range(3)], tmp_path / "redis"
    )
    try:
        nodes.start(tmp_path / "redis-logs")
        nodes.wait_replicas_online(nodes.data_ports[0], 1)
        env = _env(tmp_path, kafka_broker, "redis://127.0.0.1/0", wait_replicas)
        env.variables |= {
            "FLASHGATE_REDIS_MODE": "sentinel",
            "FLASHGATE_REDIS_SENTINELS": ",".join(nodes.sentinel_addresses),
            "FLASHGATE_REDIS_SENTINEL_MASTER": nodes.master_name,
        }
        victim = nodes.servers[0]

        def recover() -> None:
            wait_until(lambda: nodes.primary_port() == nodes.data_ports[1], 60, "the promotion")
            mark("promoted")
            # Back as a replica of the new primary, as a restarted pod comes back.
            nodes.restart_as_replica(0, tmp_path / "redis-logs" / "victim-restarted.log")
            nodes.wait_replicas_online(nodes.data_ports[1], 1)
            mark("rejoined")

        marks: dict[str, float] = {}
        mark = _marker(marks)
        _failover_mid_burst(
            f"Sentinel failover (primary SIGKILL), wait_replicas={wait_replicas}",
            env, kafka_broker, tmp_path, victim, recover, marks,
        )  # fmt: skip
    finally:
        nodes.stop()


def _env(root: Path, kafka: KafkaBroker, redis_url: str, wait_replicas: int) -> ServiceEnv:
    suffix = uuid.uuid4().hex[:8]
    env = ServiceEnv.create(
        root,
        bootstrap=kafka.bootstrap,
        redis_url=redis_url,
        orders_topic=f"orders-{suffix}",
        dlq_topic=f"orders-{suffix}.dlq",
        group_id=f"drain-{suffix}",
    )
    env.variables |= {
        "FLASHGATE_REDIS_WAIT_REPLICAS": str(wait_replicas),
        "FLASHGATE_DRAIN_RATE_PER_S": "3000",
        "FLASHGATE_DRAIN_BURST": "300",
    }
    env.create_topics()
    return env


def _marker(marks: dict[str, float]) -> Callable[[str], None]:
    def mark(name: str) -> None:
        marks[name] = time.time()

    return mark


def _failover_mid_burst(
    scenario: str,
    env: ServiceEnv,
    kafka_broker: KafkaBroker,
    tmp_path: Path,
    victim: RedisServer,
    recover: Callable[[], None],
    marks: dict[str, float],
) -> None:
    """Burst, SIGKILL `victim` once FAULT_AFTER orders are in, `recover`, reconcile."""
    services = Services(env)
    try:
        services.start_backend()
        services.start_consumer()
        services.start_gateway()
        unlimited = {"per_second": 0, "burst": 1}
        load_sale(
            env,
            SALE,
            {
                "stock": {f"SKU-{i}": UNITS_PER_SKU for i in range(SKUS)},
                "per_user_max": 1,
                "rates": {"sale": unlimited, "user": unlimited, "ip": unlimited},
            },
        )
        burst = start_burst(env.gateway_url, BUYERS, sale_id=SALE, skus=SKUS)
        assert wait_accepted(burst[1], FAULT_AFTER, 60)
        fault_at = time.time()
        assert victim.process is not None
        victim.process.send(signal.SIGKILL)
        recover()
        thread, log = burst
        thread.join(BURST_TIMEOUT_S)
        assert not thread.is_alive(), "the burst did not finish in time"
        result = reconcile(
            scenario,
            log,
            env.root / "backend.sqlite3",
            kafka_broker.bootstrap,
            env.variables["FLASHGATE_KAFKA_DLQ_TOPIC"],
            fault_at,
            gateway_url=env.gateway_url,
            stock={f"SKU-{i}": UNITS_PER_SKU for i in range(SKUS)},
        )
        oversold = result.oversold
        row = result.as_dict() | {
            f"{name}_s": round(at - fault_at, 1) for name, at in marks.items()
        }  # fmt: skip
        _record(row, tmp_path)
        assert result.lost == 0, row
        assert result.stored_twice == 0, row
        assert result.dead_lettered == 0, row
        assert 500 not in result.statuses, row
        # The admin API answers at once after the failover (its client retries the
        # connections the failover closed), and no unit vanished: each is sold, still
        # for sale, or held until the reaper returns it.
        skus = _sale_skus(env)
        unsold = sum(sku["remaining"] + sku["reserved"] for sku in skus.values())
        assert result.accepted + unsold >= SKUS * UNITS_PER_SKU - oversold, (row, skus)
        # Only with WAIT must the sale sell out during the burst. Without it the new
        # primary can miss the old one's last writes (a reservation's release, say), so
        # those units stay held until the reaper returns them, which can be after the
        # buyers gave up (seen once in a full run: 1,188 of 1,200 sold, 12 held).
        if env.variables["FLASHGATE_REDIS_WAIT_REPLICAS"] != "0":
            assert oversold == 0, row
            assert result.accepted >= SKUS * UNITS_PER_SKU, row
    finally:
        services.stop_all()


def _sale_skus(env: ServiceEnv) -> dict[str, dict[str, int]]:
    """The sale's units per SKU, from the admin API (its client retries a connection
    the failover closed, so it answers as soon as the new primary does)."""
    skus: dict[str, dict[str, int]] = admin_json(env, "GET", f"/admin/v1/sales/{SALE}")["skus"]
    return skus


def _record(row: dict[str, object], tmp_path: Path) -> None:
    path = Path(os.environ.get("CHAOS_RESULTS", str(tmp_path / "chaos.jsonl")))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        out.write(json.dumps(row) + "\n")

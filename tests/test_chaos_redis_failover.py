"""A Redis Cluster failover mid-burst: the primary holding the sale's slot is SIGKILLed.

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
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flashgate.admission.keys import SaleKeys
from flashgate.errors import StackError
from flashgate.stack.kafka_broker import KafkaBroker
from flashgate.stack.ports import free_port
from flashgate.stack.redis_cluster import RedisClusterNodes, wait_until
from tests.chaos_support import reconcile, start_burst, wait_accepted
from tests.services import ServiceEnv, Services, load_sale

pytestmark = pytest.mark.chaos

SKUS = 4
UNITS_PER_SKU = 300
BUYERS = 2 * SKUS * UNITS_PER_SKU  # demand twice the stock: the sale sells out
FAULT_AFTER = 300
BURST_TIMEOUT_S = 180.0
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


def _stored_per_sku(db_path: Path) -> dict[str, int]:
    connection = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        bodies = [body for (body,) in connection.execute("SELECT body FROM orders")]
    finally:
        connection.close()
    units: dict[str, int] = {}
    for body in bodies:
        order = json.loads(body)
        units[order["sku"]] = units.get(order["sku"], 0) + int(order["quantity"])
    return units


@pytest.mark.parametrize("wait_replicas", [1, 0], ids=["wait-1", "wait-0"])
def test_sale_primary_sigkill_mid_burst(
    kafka_broker: KafkaBroker, cluster: RedisClusterNodes, tmp_path: Path, wait_replicas: int
) -> None:
    suffix = uuid.uuid4().hex[:8]
    env = ServiceEnv.create(
        tmp_path,
        bootstrap=kafka_broker.bootstrap,
        redis_url=cluster.url,
        orders_topic=f"orders-{suffix}",
        dlq_topic=f"orders-{suffix}.dlq",
        group_id=f"drain-{suffix}",
    )
    env.variables |= {
        "FLASHGATE_REDIS_MODE": "cluster",
        "FLASHGATE_REDIS_WAIT_REPLICAS": str(wait_replicas),
        "FLASHGATE_DRAIN_RATE_PER_S": "3000",
        "FLASHGATE_DRAIN_BURST": "300",
    }
    env.create_topics()
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
        victim_port = cluster.primary_of(SaleKeys.of(SALE).core[0])
        victim = next(server for server in cluster.servers if server.port == victim_port)
        burst = start_burst(env.gateway_url, BUYERS, sale_id=SALE, skus=SKUS)
        assert wait_accepted(burst[1], FAULT_AFTER, 60)
        fault_at = time.time()
        assert victim.process is not None
        victim.process.send(signal.SIGKILL)
        key = SaleKeys.of(SALE).core[0]

        def promoted() -> bool:
            try:
                return cluster.primary_of(key) != victim_port and cluster.slots_ok(
                    cluster.live_port()
                )
            except StackError:  # no primary for the slot yet
                return False

        wait_until(promoted, 60, "the replica's promotion")
        promoted_s = time.time() - fault_at
        # The promoted replica has no replica of its own: with wait_replicas = 1 its
        # sales answer 503 until the old primary is back, as its replica.
        victim.start(tmp_path / "redis-logs" / "victim-restarted.log")
        victim.wait_listening()
        wait_until(cluster.replicas_linked, 60, "the old primary's return as a replica")
        rejoined_s = time.time() - fault_at
        thread, log = burst
        thread.join(BURST_TIMEOUT_S)
        assert not thread.is_alive(), "the burst did not finish in time"
        result = reconcile(
            f"Redis Cluster primary SIGKILL, wait_replicas={wait_replicas}",
            log,
            env.root / "backend.sqlite3",
            kafka_broker.bootstrap,
            env.variables["FLASHGATE_KAFKA_DLQ_TOPIC"],
            fault_at,
        )
        stored = _stored_per_sku(env.root / "backend.sqlite3")
        oversold = sum(max(0, units - UNITS_PER_SKU) for units in stored.values())
        row = result.as_dict() | {
            "promoted_s": round(promoted_s, 1),
            "rejoined_s": round(rejoined_s, 1),
            "oversold": oversold,
        }
        _record(row, tmp_path)
        assert result.lost == 0, row
        assert result.stored_twice == 0, row
        assert result.dead_lettered == 0, row
        if wait_replicas:
            assert oversold == 0, row
        # The sale sold out through the failover: every unit found a buyer.
        assert result.accepted >= SKUS * UNITS_PER_SKU - oversold, row
    finally:
        services.stop_all()


def _record(row: dict[str, object], tmp_path: Path) -> None:
    path = Path(os.environ.get("CHAOS_RESULTS", str(tmp_path / "chaos.jsonl")))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        out.write(json.dumps(row) + "\n")

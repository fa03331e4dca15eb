"""Faults mid-burst: nothing accepted is lost, nothing is stored twice, nothing oversold.

Each scenario sends a burst of 5,000 orders from storefront clients, injects
one fault in the middle, lets the system recover, then reconciles what every
shopper was told against the backend's stored orders and the dead-letter topic
(tests/chaos_support.py). Figures go to $CHAOS_RESULTS (JSON lines) for
loadtest/RESULTS.md; `make chaos` runs only this suite.

Most scenarios have ample stock and retrying shoppers: the question is whether
an accepted order survives the fault. The paused-broker scenarios sell less
stock than is asked for, so that a unit released while its record may still
reach Kafka would be sold twice: there the question is no oversell and no
ghost order (stored, though its shopper was told it failed).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flashgate.kafka.topics import wait_for_broker
from flashgate.stack.kafka_broker import KafkaBroker
from flashgate.stack.kafka_cluster import KafkaCluster
from flashgate.stack.ports import free_port
from flashgate.stack.redis_server import RedisServer
from tests.chaos_support import (
    BurstLog,
    Reconciliation,
    drain_caught_up,
    reconcile,
    record,
    start_burst,
    wait_accepted,
)
from tests.services import (
    START_TIMEOUT_S,
    ServiceEnv,
    Services,
    admin_json,
    http_json,
    load_sale,
    running_broker,
)

pytestmark = pytest.mark.chaos

ORDERS = 5_000
FAULT_AFTER = 1_500  # accepted orders before the fault
BURST_TIMEOUT_S = 240.0
RECONCILE_TIMEOUT_S = 120.0
ACCEPT_TIMEOUT_S = 60.0
# The three processes each scenario starts, each bounded by its own start timeout.
STARTUP_BOUND_S = 3 * START_TIMEOUT_S
# Room for what has no bound of its own (topic creation, teardown).
MARGIN_S = 60.0


def _limit(fault_bound_s: float) -> pytest.MarkDecorator:
    """A pytest timeout above the sum of the scenario's own bounds (start, first accepted
    orders, its fault's, the burst, the reconciliation): the project's global limit is
    shorter, and would cut a slow scenario before its own bound failed with its own
    message."""
    total = STARTUP_BOUND_S + ACCEPT_TIMEOUT_S + fault_bound_s + BURST_TIMEOUT_S
    return pytest.mark.timeout(total + RECONCILE_TIMEOUT_S + MARGIN_S)


SKUS = 4
AMPLE_STOCK = {f"SKU-{i}": ORDERS * 2 for i in range(SKUS)}


def _results_path(tmp_path: Path) -> Path:
    return Path(os.environ.get("CHAOS_RESULTS", str(tmp_path / "chaos.jsonl")))


def _env(root: Path, bootstrap: str, redis_url: str) -> ServiceEnv:
    suffix = uuid.uuid4().hex[:8]
    env = ServiceEnv.create(
        root,
        bootstrap=bootstrap,
        redis_url=redis_url,
        orders_topic=f"orders-{suffix}",
        dlq_topic=f"orders-{suffix}.dlq",
        group_id=f"drain-{suffix}",
    )
    env.variables["FLASHGATE_DRAIN_RATE_PER_S"] = "3000"
    env.variables["FLASHGATE_DRAIN_BURST"] = "300"
    return env


def _start_all(services: Services, stock: dict[str, int] = AMPLE_STOCK) -> str:
    """Start the processes and load a sale of its own (Redis may be the session's, and a
    reloaded sale keeps what an earlier test sold): its id."""
    sale_id = f"chaos-{uuid.uuid4().hex[:8]}"
    services.start_backend()
    services.start_consumer()
    services.start_gateway()
    unlimited = {"per_second": 0, "burst": 1}
    load_sale(
        services.env,
        sale_id,
        {
            "stock": stock,
            "per_user_max": 1,
            "rates": {"sale": unlimited, "user": unlimited, "ip": unlimited},
        },
    )
    return sale_id


def _sale_settled(env: ServiceEnv, sale_id: str) -> bool:
    """No reservation left open: every order confirmed, or its units returned."""
    report = admin_json(env, "GET", f"/admin/v1/sales/{sale_id}")
    return bool(
        report["pending_reservations"] == 0
        and all(sku["reserved"] == 0 for sku in report["skus"].values())
    )


def _reconcile(
    scenario: str,
    services: Services,
    burst: tuple[threading.Thread, BurstLog],
    fault_at: float,
    tmp_path: Path,
    *,
    stock: dict[str, int] = AMPLE_STOCK,
    settle_sale: str | None = None,
) -> Reconciliation:
    thread, log = burst
    thread.join(BURST_TIMEOUT_S)
    assert not thread.is_alive(), "the burst did not finish in time"
    env = services.env
    result = reconcile(
        scenario,
        log,
        env.root / "backend.sqlite3",
        env.variables["FLASHGATE_KAFKA_BOOTSTRAP_SERVERS"],
        env.variables["FLASHGATE_KAFKA_DLQ_TOPIC"],
        fault_at,
        gateway_url=env.gateway_url,
        stock=stock,
        settled=(lambda: _sale_settled(env, settle_sale)) if settle_sale else None,
        timeout_s=RECONCILE_TIMEOUT_S,
        drained=lambda: drain_caught_up(
            env.variables["FLASHGATE_KAFKA_BOOTSTRAP_SERVERS"],
            env.variables["FLASHGATE_KAFKA_ORDERS_TOPIC"],
            env.variables["FLASHGATE_DRAIN_GROUP_ID"],
        ),
    )
    record(result, _results_path(tmp_path))
    return result


def _finish(
    scenario: str,
    services: Services,
    burst: tuple[threading.Thread, BurstLog],
    fault_at: float,
    tmp_path: Path,
) -> None:
    result = _reconcile(scenario, services, burst, fault_at, tmp_path)
    assert result.accepted >= ORDERS * 0.9, result
    assert result.lost == 0, result
    assert result.stored_twice == 0, result
    assert result.dead_lettered == 0, result
    assert result.unknown_unsettled == 0, result
    assert result.drained, result
    assert result.oversold == 0, result
    assert result.ghost == 0, result


@pytest.fixture
def own_broker(kafka_libs: Path, tmp_path: Path) -> Iterator[KafkaBroker]:
    with running_broker(kafka_libs, tmp_path / "kafka") as broker:
        yield broker


# Its own broker's start (90 s), down 3 s, back within 90 s.
@_limit(90 + 3 + 90)
def test_kafka_broker_sigkill_and_restart(
    own_broker: KafkaBroker, redis_server: RedisServer, tmp_path: Path
) -> None:
    env = _env(tmp_path, own_broker.bootstrap, redis_server.url)
    env.create_topics()
    services = Services(env)
    try:
        sale_id = _start_all(services)
        burst = start_burst(env.gateway_url, ORDERS, sale_id=sale_id)
        assert wait_accepted(burst[1], FAULT_AFTER, ACCEPT_TIMEOUT_S)
        fault_at = time.time()
        own_broker.kill()
        time.sleep(3)  # the fault itself: the broker stays down 3 s
        own_broker.start(tmp_path / "kafka-restarted.log")
        own_broker.wait_listening(90)
        _finish("Kafka broker SIGKILL + restart", services, burst, fault_at, tmp_path)
    finally:
        services.stop_all()


@_limit(10 + 1)
def test_consumer_sigkill_mid_drain(service_env: ServiceEnv, tmp_path: Path) -> None:
    service_env.variables["FLASHGATE_DRAIN_RATE_PER_S"] = "1500"
    services = Services(service_env)
    try:
        sale_id = _start_all(services)
        burst = start_burst(service_env.gateway_url, ORDERS, sale_id=sale_id)
        stats_url = f"{service_env.backend_url}/stats"
        deadline = time.monotonic() + ACCEPT_TIMEOUT_S
        while http_json("GET", stats_url)["orders"] < FAULT_AFTER:
            assert time.monotonic() < deadline, "the drain never got going"
            time.sleep(0.1)
        fault_at = time.time()
        consumer = next(p for p in services.running if p.name == "consumer")
        consumer.send(signal.SIGKILL)
        consumer.wait(10)
        time.sleep(1)  # the fault itself: no consumer for a second
        services.start_consumer()
        _finish("consumer SIGKILL mid-drain", services, burst, fault_at, tmp_path)
    finally:
        services.stop_all()


@_limit(0)  # the outage runs inside the burst's and the reconciliation's bounds
def test_backend_outage_of_30_seconds(service_env: ServiceEnv, tmp_path: Path) -> None:
    services = Services(service_env)
    try:
        sale_id = _start_all(services)
        burst = start_burst(service_env.gateway_url, ORDERS, sale_id=sale_id)
        assert wait_accepted(burst[1], FAULT_AFTER, ACCEPT_TIMEOUT_S)
        fault_at = time.time()
        http_json("PUT", f"{service_env.backend_url}/admin/faults", {"outage_seconds": 30})
        _finish("backend outage 30 s", services, burst, fault_at, tmp_path)
    finally:
        services.stop_all()


# Its own Redis's start and restart (20 s each), down 2 s.
@_limit(20 + 2 + 20)
def test_redis_restart(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    redis = RedisServer(free_port(), tmp_path / "redis")
    redis.start(tmp_path / "redis.log")
    services: Services | None = None
    try:
        redis.wait_listening()
        env = _env(tmp_path, kafka_broker.bootstrap, redis.url)
        env.create_topics()
        services = Services(env)
        sale_id = _start_all(services)
        burst = start_burst(env.gateway_url, ORDERS, sale_id=sale_id)
        assert wait_accepted(burst[1], FAULT_AFTER, ACCEPT_TIMEOUT_S)
        fault_at = time.time()
        redis.stop()  # SIGTERM: the AOF is flushed, as on a planned restart
        time.sleep(2)  # the fault itself: Redis stays down 2 s
        redis.start(tmp_path / "redis-restarted.log")
        redis.wait_listening()
        _finish("Redis restart", services, burst, fault_at, tmp_path)
    finally:
        if services is not None:
            services.stop_all()
        redis.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
@_limit(30)
def test_gateway_killed_mid_burst(
    service_env: ServiceEnv, tmp_path: Path, sig: signal.Signals
) -> None:
    services = Services(service_env)
    try:
        sale_id = _start_all(services)
        burst = start_burst(service_env.gateway_url, ORDERS, sale_id=sale_id)
        assert wait_accepted(burst[1], FAULT_AFTER, ACCEPT_TIMEOUT_S)
        fault_at = time.time()
        gateway = next(p for p in services.running if p.name == "gateway")
        gateway.send(sig)
        assert gateway.wait(30) is not None, "the gateway did not exit"
        services.start_gateway()
        _finish(f"gateway {sig.name} mid-burst", services, burst, fault_at, tmp_path)
    finally:
        services.stop_all()


# The cluster's start and first answer (90 s each), and 30 s more for the first orders.
@_limit(90 + 90 + 30)
def test_three_broker_cluster_loses_a_broker(
    kafka_libs: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    cluster = KafkaCluster.create(
        3, tmp_path / "cluster", kafka_libs, heap_mb=320,
        overrides={"broker.session.timeout.ms": "3000", "broker.heartbeat.interval.ms": "500"},
    )  # fmt: skip
    try:
        cluster.start()
        env = _env(tmp_path, cluster.bootstrap, redis_server.url)
        env.variables["FLASHGATE_KAFKA_REPLICATION_FACTOR"] = "3"
        env.variables["FLASHGATE_KAFKA_MIN_INSYNC_REPLICAS"] = "2"
        wait_for_broker(env.settings.kafka, 90)
        env.create_topics()
        services = Services(env)
        try:
            sale_id = _start_all(services)
            burst = start_burst(env.gateway_url, ORDERS, sale_id=sale_id)
            assert wait_accepted(burst[1], FAULT_AFTER, ACCEPT_TIMEOUT_S + 30)
            fault_at = time.time()
            cluster.broker(2).kill()
            _finish("3-broker cluster, one broker SIGKILL", services, burst, fault_at, tmp_path)
        finally:
            services.stop_all()
    finally:
        cluster.kill()


# The pause outlasts the produce timeout twice over, so that orders sent during it end
# as unknown outcomes; a short reservation TTL and reaper interval settle them within
# seconds of the broker's return rather than the production 30 s.
PAUSE_S = 8.0
PAUSED_BROKER = {
    "FLASHGATE_GATEWAY_PRODUCE_TIMEOUT_MS": "3000",
    "FLASHGATE_KAFKA_MESSAGE_TIMEOUT_MS": "3000",
    "FLASHGATE_GATEWAY_RESERVATION_TTL_S": "4",
    "FLASHGATE_GATEWAY_REAPER_INTERVAL_S": "0.5",
}
# Less stock than buyers (one unit each): units given back while their record may still
# reach Kafka would be sold again and show as oversold. The pause comes early, so the
# burst is still selling when the reaper settles the unknown outcomes.
SCARCE_STOCK = {f"SKU-{i}": 500 for i in range(SKUS)}
PAUSE_AFTER = 400


@pytest.mark.parametrize(
    ("give_up", "scenario"),
    [
        (True, "Kafka broker paused 8 s mid-burst, buyers give up after the first answer"),
        (False, "Kafka broker paused 8 s mid-burst, retrying buyers"),
    ],
    ids=["give-up", "retrying"],
)
@_limit(90 + PAUSE_S)  # its own broker's start, then the pause
def test_kafka_broker_paused_mid_burst(
    own_broker: KafkaBroker,
    redis_server: RedisServer,
    tmp_path: Path,
    give_up: bool,
    scenario: str,
) -> None:
    """The broker's JVM is stopped (SIGSTOP, as a long GC pause or a network stall) for
    longer than message.timeout.ms: orders in flight get an unknown outcome. The backend
    must store no more units than the stock, no order whose shopper was told it failed,
    and every order its shopper was told was placed."""
    broker = own_broker.process
    assert broker is not None
    env = _env(tmp_path, own_broker.bootstrap, redis_server.url)
    env.variables.update(PAUSED_BROKER)
    env.create_topics()
    services = Services(env)
    try:
        sale_id = _start_all(services, SCARCE_STOCK)
        burst = start_burst(env.gateway_url, ORDERS, sale_id=sale_id, give_up=give_up)
        assert wait_accepted(burst[1], PAUSE_AFTER, ACCEPT_TIMEOUT_S)
        fault_at = time.time()
        broker.send(signal.SIGSTOP)
        try:
            time.sleep(PAUSE_S)  # the fault itself
        finally:
            broker.send(signal.SIGCONT)
        result = _reconcile(
            scenario, services, burst, fault_at, tmp_path,
            stock=SCARCE_STOCK, settle_sale=sale_id,
        )  # fmt: skip
    finally:
        broker.send(signal.SIGCONT)  # harmless if running; never leave the broker stopped
        services.stop_all()
    assert result.unknown_unsettled == 0, result
    assert result.drained, result
    assert result.oversold == 0, result
    assert result.ghost == 0, result
    assert result.lost == 0, result
    assert result.stored_twice == 0, result
    assert result.dead_lettered == 0, result
    assert result.accepted <= result.stock, result
    # Last, so that a gateway that releases on a timeout fails above on what it does.
    assert result.outcome_unknown > 0, (
        f"the {PAUSE_S:g} s pause produced no outcome_unknown answer, so the fault did not "
        f"bite and nothing was tested: {result}"
    )

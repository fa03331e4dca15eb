"""Session fixtures: a real Kafka broker (KRaft, Maven jars) and a real Redis, on free ports.

They never use the `make up` ports, and they stop even when a test fails.
Each test gets its own topics and consumer group, so tests never see each
other's orders.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from flashgate.settings import RedisSettings
from flashgate.stack.kafka_broker import KafkaBroker
from flashgate.stack.kafka_jars import ensure_kafka_jars
from flashgate.stack.ports import free_port
from flashgate.stack.redis_cluster import RedisClusterNodes
from flashgate.stack.redis_server import RedisServer
from tests.gateway_client import new_env
from tests.services import ServiceEnv, Services, running_broker

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def kafka_libs() -> Path:
    return ensure_kafka_jars(REPO / ".cache" / "kafka-4.3.1")


@pytest.fixture(scope="session")
def kafka_broker(
    kafka_libs: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KafkaBroker]:
    with running_broker(kafka_libs, tmp_path_factory.mktemp("kafka")) as broker:
        yield broker


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    data = tmp_path_factory.mktemp("redis")
    server = RedisServer(free_port(), data)
    server.start(data / "redis.log")
    try:
        server.wait_listening()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    """A real Redis Cluster, 3 primaries and 3 replicas, started once for the session."""
    data = tmp_path_factory.mktemp("redis-cluster")
    nodes = RedisClusterNodes(
        [free_port() for _ in range(6)], [free_port() for _ in range(6)], data
    )
    try:
        nodes.start(data / "logs")
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture(params=["standalone", "cluster"])
def any_redis(request: pytest.FixtureRequest) -> RedisSettings:
    """Client settings for the session's standalone Redis, then for its Redis Cluster:
    a test taking this runs on both."""
    if request.param == "cluster":
        cluster: RedisClusterNodes = request.getfixturevalue("redis_cluster")
        return RedisSettings(mode="cluster", url=cluster.url)
    server: RedisServer = request.getfixturevalue("redis_server")
    return RedisSettings(url=server.url)


@pytest.fixture
def service_env(
    kafka_broker: KafkaBroker, redis_server: RedisServer, tmp_path: Path
) -> Iterator[ServiceEnv]:
    """Settings (as FLASHGATE_* variables) for one test: its own topics, group and ports."""
    env = new_env(kafka_broker, redis_server, tmp_path)
    yield env
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushdb()
    finally:
        client.close()


@pytest.fixture
def services(service_env: ServiceEnv) -> Iterator[Services]:
    """Start gateway, consumer and backend processes on demand; stop them all afterwards."""
    running = Services(service_env)
    try:
        yield running
    finally:
        running.stop_all()

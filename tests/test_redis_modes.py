"""Redis settings, the client factory and WAIT for replicas, on real servers.

A standalone Redis has no replica, so an admission that must reach one is
answered unavailable and gives its units back; on the session's Redis Cluster
(one replica per primary) one replica is reached and two are not.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from flashgate.admission import admitter as admitter_module
from flashgate.admission.admitter import Admitter, Reservation
from flashgate.admission.errors import AdmissionUnavailable
from flashgate.admission.keys import SaleKeys
from flashgate.admission.sales import RateSpec, RatesSpec, SaleDefinition, SaleStore
from flashgate.errors import ConfigError
from flashgate.ids import new_order_id
from flashgate.redis_client import create_redis, describe, redacted_url
from flashgate.redis_scripts.loader import RedisScripts, Replication
from flashgate.settings import RedisSettings, SalesSettings, load_settings
from flashgate.stack.redis_cluster import RedisClusterNodes
from flashgate.stack.redis_server import RedisServer

OPEN = RatesSpec(
    sale=RateSpec(per_second=0, burst=1),
    user=RateSpec(per_second=0, burst=1),
    ip=RateSpec(per_second=0, burst=1),
)


@pytest.mark.parametrize(
    ("variables", "complaint"),
    [
        ({"MODE": "replicated"}, "redis.mode"),
        ({"URL": "http://127.0.0.1:6379"}, "redis://"),
        ({"MODE": "sentinel"}, "sentinels"),
        ({"MODE": "sentinel", "SENTINELS": "a", "SENTINEL_MASTER": "m"}, "host:port"),
        ({"SSL_CERT_FILE": "client.pem"}, "ssl_key_file"),
        ({"WAIT_REPLICAS": "-1"}, "wait_replicas"),
    ],
)
def test_invalid_redis_settings_are_refused(variables: dict[str, str], complaint: str) -> None:
    environ = {f"FLASHGATE_REDIS_{key}": value for key, value in variables.items()}
    with pytest.raises(ConfigError, match=complaint):
        load_settings(environ=environ)


def test_sentinel_and_tls_settings_and_no_secret_shown() -> None:
    settings = load_settings(
        environ={
            "FLASHGATE_REDIS_MODE": "sentinel",
            "FLASHGATE_REDIS_URL": "rediss://flashgate:s3cret@127.0.0.1:6380/0",
            "FLASHGATE_REDIS_SENTINELS": "127.0.0.1:26379, 127.0.0.1:26380",
            "FLASHGATE_REDIS_SENTINEL_MASTER": "flashgate",
            "FLASHGATE_REDIS_WAIT_REPLICAS": "1",
        }
    ).redis
    assert settings.sentinels == ["127.0.0.1:26379", "127.0.0.1:26380"] and settings.tls
    line = describe(settings)
    assert "s3cret" not in line and "flashgate via 127.0.0.1:26379" in line and "WAIT 1" in line
    cluster = RedisSettings(mode="cluster", url="rediss://app:s3cret@10.0.0.1:7000/0")
    assert describe(cluster) == "Redis cluster rediss://app:***@10.0.0.1:7000/0 (TLS)"
    assert redacted_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def _admit_with_wait(settings: RedisSettings, wait: Replication) -> list[Any]:
    """Admit 3 orders in one batch under `wait`; the verdicts or errors, and stock left."""

    async def main() -> list[Any]:
        redis = create_redis(settings, retries=False)
        scripts = RedisScripts(redis, admitter_module.SCRIPTS)
        sales = SaleStore(scripts)
        admitter = Admitter(
            scripts,
            reservation_ttl_ms=30_000,
            batching=True,
            wait=wait,
        )
        try:
            await sales.load("w", SaleDefinition(stock={"A": 5}, rates=OPEN), SalesSettings())
            # A script cache emptied (as on a promoted replica): reloaded, then waited on.
            await redis.script_flush()
            orders = [Reservation(new_order_id(), "w", "A", 1, f"u{i}") for i in range(3)]
            answers: list[Any] = await asyncio.gather(
                *(admitter.admit(order, "1.1.1.1") for order in orders), return_exceptions=True
            )
            report = await sales.report("w")
            assert report is not None
            return [*answers, report.skus["A"].remaining]
        finally:
            await admitter.aclose()
            await redis.flushdb()
            await redis.aclose()

    return asyncio.run(main())


def test_standalone_without_replica_answers_unavailable_and_gives_units_back(
    redis_server: RedisServer,
) -> None:
    settings = RedisSettings(url=redis_server.url)
    *answers, remaining = _admit_with_wait(settings, Replication(1, 50))
    assert all(isinstance(answer, AdmissionUnavailable) for answer in answers), answers
    assert "replica" in str(answers[0])
    assert remaining == 5


def test_cluster_admission_waits_for_one_replica(redis_cluster: RedisClusterNodes) -> None:
    settings = RedisSettings(mode="cluster", url=redis_cluster.url, wait_replicas=1)
    *answers, remaining = _admit_with_wait(settings, Replication(1, 2000))
    assert [answer.reason for answer in answers] == ["ok"] * 3
    assert remaining == 2
    # Two replicas are asked for, one exists: unavailable, and the units come back.
    *answers, remaining = _admit_with_wait(settings, Replication(2, 50))
    assert all(isinstance(answer, AdmissionUnavailable) for answer in answers), answers
    assert remaining == 5


def test_admission_follows_a_resharding_of_its_slot(redis_cluster: RedisClusterNodes) -> None:
    """The sale's slot moves to another primary while orders are admitted: ASK, TRYAGAIN
    and then MOVED are followed; no call fails with anything but AdmissionUnavailable,
    and every unit counted as reserved was admitted exactly once."""
    key = SaleKeys.of("moving").core[0]
    slot = int(redis_cluster.cli(redis_cluster.ports[0], "CLUSTER", "KEYSLOT", key))
    target = next(p for p in redis_cluster.primaries() if p != redis_cluster.primary_of(key))

    async def main() -> tuple[int, int, list[AdmissionUnavailable], int]:
        redis = create_redis(RedisSettings(mode="cluster", url=redis_cluster.url), retries=False)
        scripts = RedisScripts(redis, admitter_module.SCRIPTS)
        sales = SaleStore(scripts)
        admitter = Admitter(scripts, reservation_ttl_ms=30_000, batching=True)
        await sales.load("moving", SaleDefinition(stock={"A": 100_000}, rates=OPEN),
                         SalesSettings())  # fmt: skip
        admitted, stop = 0, asyncio.Event()
        errors: list[AdmissionUnavailable] = []

        async def buyer(index: int) -> None:
            nonlocal admitted
            count = 0
            while not stop.is_set():
                count += 1
                order = Reservation(new_order_id(), "moving", "A", 1, f"u{index}-{count}")
                try:
                    verdict = await admitter.admit(order, "1.1.1.1")
                except AdmissionUnavailable as exc:
                    errors.append(exc)
                    continue
                admitted += verdict.admitted  # after the await: no lost update

        buyers = [asyncio.create_task(buyer(i)) for i in range(16)]
        try:
            await asyncio.to_thread(redis_cluster.move_slot, slot, target, 0.02)
            before = admitted
            # Admissions go on against the new owner: wait for some, bounded.
            deadline = asyncio.get_running_loop().time() + 10
            while admitted - before < 20:
                if asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.01)
            after = admitted - before
        finally:
            stop.set()
            unexpected = [r for r in await asyncio.gather(*buyers, return_exceptions=True) if r]
            report = await sales.report("moving")
            await admitter.aclose()
            await redis.flushdb()
            await redis.aclose()
        assert not unexpected, unexpected
        assert report is not None
        return admitted, after, errors, report.skus["A"].reserved

    admitted, after_move, errors, reserved = asyncio.run(main())
    assert redis_cluster.primary_of(key) == target
    assert after_move > 0
    assert reserved == admitted, (reserved, admitted, errors[:3])
    assert len(errors) <= admitted // 10, errors[:3]

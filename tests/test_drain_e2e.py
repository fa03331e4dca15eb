"""The order drain end to end on a real Kafka broker, a real Redis and the reference backend.

Orders are produced straight to the test's `orders` topic (the gateway is not
what these tests are about); what the backend saw is read from its `/stats`
(`per_second` counts new orders by the second they were stored). Rates stay
modest (100-300/s) so the shared 2-core box keeps up; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from redis.asyncio import Redis as AsyncRedis

from flashgate.dlq import list_dead_letters
from flashgate.drain import progress
from flashgate.drain.control import DrainControl
from flashgate.ids import new_order_id
from flashgate.kafka.config import producer_config
from flashgate.order import OrderRecord, encode_record
from flashgate.settings import Settings
from flashgate.stack.process import ManagedProcess
from tests.services import ServiceEnv, Services, http_json, wait_until

pytestmark = pytest.mark.e2e

# What the service_env fixture sets for every test; these tests set rates in the file.
FILE_KEYS = ("FLASHGATE_DRAIN_RATE_PER_S", "FLASHGATE_DRAIN_BURST")


@pytest.fixture
def drain_env(service_env: ServiceEnv) -> Iterator[ServiceEnv]:
    for key in FILE_KEYS:
        service_env.variables.pop(key, None)
    yield service_env


def write_config(env: ServiceEnv, **drain: Any) -> None:
    """Rewrite the settings file every process of the test was started with."""
    lines = ["[drain]"]
    for key, value in drain.items():
        lines.append(f"{key} = {json.dumps(value)}")
    path = Path(env.variables["FLASHGATE_CONFIG"])
    path.write_text("\n".join(lines) + "\n")


def produce_orders(settings: Settings, count: int, mark: str = "", every: int = 0) -> list[str]:
    """Produce `count` orders; with `mark`, every `every`-th one carries that attribute."""
    producer = Producer(producer_config(settings.kafka, "drain-test"))
    order_ids = []
    for i in range(count):
        order_id = new_order_id()
        attributes = {mark: "1"} if mark and i % every == 0 else {}
        record = OrderRecord(
            order_id=order_id, accepted_at=time.time(), sale_id="sale-1", sku=f"SKU-{i % 3}",
            quantity=1, user_id=f"user-{i}", attributes=attributes,
        )  # fmt: skip
        producer.produce(settings.kafka.orders_topic, encode_record(record), key=order_id.encode())
        producer.poll(0)
        order_ids.append(order_id)
    assert producer.flush(30) == 0
    return order_ids


def produce_raw(settings: Settings, value: bytes, key: bytes | None = None) -> None:
    producer = Producer(producer_config(settings.kafka, "drain-test-raw"))
    producer.produce(settings.kafka.orders_topic, value, key=key)
    assert producer.flush(30) == 0


def stats(env: ServiceEnv) -> dict[str, Any]:
    result: dict[str, Any] = http_json("GET", f"{env.backend_url}/stats")
    return result


def stored(env: ServiceEnv) -> int:
    return int(stats(env)["orders"])


def per_second(env: ServiceEnv) -> dict[int, int]:
    return {int(k): int(v) for k, v in stats(env)["per_second"].items()}


def window_counts(series: dict[int, int], start: float, end: float) -> list[int]:
    """Counts of the whole seconds inside [start, end)."""
    return [series.get(s, 0) for s in range(math.ceil(start), math.floor(end))]


def drain_control(env: ServiceEnv, action: str, value: Any) -> None:
    async def act() -> None:
        client = AsyncRedis.from_url(env.variables["FLASHGATE_REDIS_URL"])
        try:
            control = DrainControl(client, env.variables["FLASHGATE_DRAIN_GROUP_ID"])
            if action == "rate":
                await control.set_rate(value)
            else:
                await control.set_paused(value)
        finally:
            await client.aclose()

    asyncio.run(act())


def read_progress(env: ServiceEnv) -> progress.DrainProgress | None:
    async def read() -> progress.DrainProgress | None:
        client = AsyncRedis.from_url(env.variables["FLASHGATE_REDIS_URL"])
        try:
            return await progress.read(client, env.variables["FLASHGATE_DRAIN_GROUP_ID"])
        finally:
            await client.aclose()

    return asyncio.run(read())


def order_status(env: ServiceEnv, order_id: str) -> dict[str, str]:
    client = redis.Redis.from_url(env.variables["FLASHGATE_REDIS_URL"], decode_responses=True)
    try:
        return dict(client.hgetall(f"order:{order_id}"))  # type: ignore[arg-type]
    finally:
        client.close()


def committed_total(settings: Settings) -> int:
    """The sum of the drain group's committed offsets over the orders topic."""
    topic = settings.kafka.orders_topic
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap_servers,
         "group.id": settings.drain.group_id, "log_level": 3}
    )  # fmt: skip
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        partitions = [TopicPartition(topic, p) for p in metadata.partitions]
        return sum(max(0, tp.offset) for tp in consumer.committed(partitions, timeout=10))
    finally:
        consumer.close()


def log_text(process: ManagedProcess) -> str:
    return process.log_path.read_text(errors="replace")


def wait_stored(env: ServiceEnv, count: int, timeout_s: float) -> None:
    assert wait_until(lambda: stored(env) >= count, timeout_s), stats(env)


def wait_consuming(env: ServiceEnv, timeout_s: float = 20) -> None:
    """Until some order has reached the backend (the consumer joined and drains)."""
    assert wait_until(lambda: stored(env) > 0, timeout_s, interval_s=0.1), "nothing delivered"


# -- rate ----------------------------------------------------------------------------------


def test_two_replicas_share_one_rate(drain_env: ServiceEnv, services: Services) -> None:
    rate, burst, total = 200, 20, 1000
    write_config(drain_env, rate_per_s=rate, burst=burst)
    services.start_backend()
    produce_orders(drain_env.settings, total)
    consumers = [services.start_consumer(), services.start_consumer()]

    wait_stored(drain_env, total, timeout_s=40)
    final = stats(drain_env)
    assert final["orders"] == total
    assert final["duplicates"] == 0
    series = per_second(drain_env)
    # Every 1-second window: at most rate + burst (+1 for a request granted just before
    # the second turned, stored just after).
    assert max(series.values()) <= rate + burst + 1, series
    seconds = sorted(series)
    full = window_counts(series, seconds[0] + 1, seconds[-1])  # whole seconds inside
    assert full, series
    # Lower bounds are loose: on a shared 2-core box a starved consumer loses tokens.
    assert sum(full) / len(full) >= rate * 0.8, series
    # Both replicas delivered.
    for consumer in consumers:
        consumer.stop(timeout_s=20)
    delivered = [
        int(log_text(c).rsplit("stopped: delivered ", 1)[1].split(",")[0]) for c in consumers
    ]
    assert all(n > 0 for n in delivered), delivered
    assert sum(delivered) == total


def test_live_override_pause_resume_and_file_change(
    drain_env: ServiceEnv, services: Services
) -> None:
    burst = 10
    write_config(drain_env, rate_per_s=100, burst=burst)
    services.start_backend()
    produce_orders(drain_env.settings, 3000)
    consumer = services.start_consumer()
    wait_consuming(drain_env)
    first = time.time()
    time.sleep(3.2)

    # Ops lower the rate: every 1-second window from a second after the change obeys it.
    changed = time.time()
    drain_control(drain_env, "rate", 40)
    assert wait_until(lambda: (p := read_progress(drain_env)) is not None
                      and p.effective_rate == 40 and p.reason == "override", 1.5)  # fmt: skip
    time.sleep(3.2)

    # Paused: nothing reaches the backend any more (after at most a second).
    paused = time.time()
    drain_control(drain_env, "paused", True)
    time.sleep(1.2)
    count = stored(drain_env)
    progress_now = read_progress(drain_env)
    assert progress_now is not None
    assert (progress_now.reason, progress_now.effective_rate) == ("paused", 0)
    time.sleep(1.5)
    assert stored(drain_env) == count

    # Resumed, override cleared, and the file raised to 300/s: the new ceiling applies.
    resumed = time.time()
    drain_control(drain_env, "paused", False)
    drain_control(drain_env, "rate", None)
    write_config(drain_env, rate_per_s=300, burst=burst)
    time.sleep(3.5)

    series = per_second(drain_env)
    before = window_counts(series, first + 1, changed)
    assert before and all(70 <= n <= 100 + burst + 1 for n in before), (before, series)
    lowered = window_counts(series, changed + 1, paused)
    assert lowered and all(25 <= n <= 40 + burst + 1 for n in lowered), (lowered, series)
    assert window_counts(series, paused + 1, resumed) == [0] * len(
        window_counts(series, paused + 1, resumed)
    )
    raised = window_counts(series, resumed + 1, time.time() - 0.2)
    assert raised and all(200 <= n <= 300 + burst + 1 for n in raised), (raised, series)

    consumer.stop(timeout_s=20)
    log = log_text(consumer)
    assert "drain override rate: none -> 40/s" in log
    assert "drain paused: False -> True" in log
    assert "drain.rate_per_s: 100.0 -> 300.0 (settings file)" in log
    assert stats(drain_env)["duplicates"] == 0


def test_schedule_switch(drain_env: ServiceEnv, services: Services) -> None:
    burst = 5
    now = time.time()
    switch = math.floor(now) + 7

    def hms(t: float) -> str:
        return time.strftime("%H:%M:%S", time.gmtime(t))

    schedule = [f"{hms(now - 3600)}-{hms(switch)}=50", f"{hms(switch)}-{hms(now + 3600)}=250"]
    write_config(drain_env, rate_per_s=1, burst=burst, schedule=schedule, timezone="UTC")
    services.start_backend()
    produce_orders(drain_env.settings, 2000)
    consumer = services.start_consumer()
    wait_consuming(drain_env)
    first = time.time()
    assert first < switch - 1.5, "the consumer started too late for this test"
    assert wait_until(lambda: time.time() > switch + 3.2, 15)
    series = per_second(drain_env)
    slow = window_counts(series, first + 1, switch)
    fast = window_counts(series, switch + 1, time.time() - 0.2)
    assert slow and all(35 <= n <= 50 + burst + 1 for n in slow), (slow, series)
    assert fast and all(180 <= n <= 250 + burst + 1 for n in fast), (fast, series)
    current = read_progress(drain_env)
    assert current is not None and current.schedule is not None
    assert current.schedule.startswith(f"{hms(switch)}-")
    consumer.stop(timeout_s=20)
    assert "drain rate 50/s -> 250/s (schedule: " in log_text(consumer)


# -- failures --------------------------------------------------------------------------------


def test_backend_outage_then_recovery_loses_nothing(
    drain_env: ServiceEnv, services: Services
) -> None:
    total = 900
    write_config(drain_env, rate_per_s=200, burst=20, max_attempts=3, adaptive_floor_per_s=100)
    backend = services.start_backend()
    order_ids = produce_orders(drain_env.settings, total)
    consumer = services.start_consumer()
    wait_stored(drain_env, 150, timeout_s=20)

    # 1. The backend answers 503 with Retry-After for 2 s: waited out, not dead-lettered.
    http_json("PUT", f"{drain_env.backend_url}/admin/faults", {"outage_seconds": 2})
    time.sleep(2.5)
    wait_stored(drain_env, stored(drain_env) + 50, timeout_s=20)

    # 2. The backend is gone for 3 s (connection refused): the gate trips, partitions
    #    pause, the consumer stays in its group and probes until the backend is back.
    backend.stop(timeout_s=10)
    time.sleep(3)
    services.start_backend()
    wait_stored(drain_env, total, timeout_s=60)

    final = stats(drain_env)
    assert final["orders"] == total
    assert final["duplicates"] == 0
    assert list_dead_letters(drain_env.settings) == []
    for order_id in order_ids[:: total // 20]:
        assert wait_until(lambda o=order_id: order_status(drain_env, o).get("status")
                          == "delivered", 5)  # fmt: skip
    consumer.stop(timeout_s=20)
    log = log_text(consumer)
    assert "backend down" in log and "pausing partitions (backend down)" in log
    assert "backend is back" in log
    # It stayed in its group throughout: the only revocation is the one at its stop.
    assert log.count("revoked [") == 2 and "lost [" not in log
    assert log.index("revoked [") > log.index("backend is back")


def test_sigterm_commits_and_sigkill_redelivers_without_storing_twice(
    drain_env: ServiceEnv, services: Services
) -> None:
    total = 1200
    write_config(drain_env, rate_per_s=300, burst=30)
    services.start_backend()
    produce_orders(drain_env.settings, total)

    first = services.start_consumer()
    wait_stored(drain_env, 300, timeout_s=20)
    first.send(__import__("signal").SIGTERM)
    # The consumer's own shutdown budget: requests on the wire get backend_timeout_s + 1
    # (10 + 1 s), then the revocation at close gets as long again plus its slack. 15 s
    # was shorter than that and failed once on a slow, shared CI machine.
    assert first.wait(timeout_s=40) == 0, log_text(first)
    after_term = stats(drain_env)

    second = services.start_consumer()
    wait_stored(drain_env, after_term["orders"] + 300, timeout_s=20)
    # SIGTERM finished what was on the wire and committed it: nothing was sent again.
    assert stats(drain_env)["duplicates"] == 0
    second.kill()
    # Frozen now: every record below the group's committed offsets was delivered and is
    # never sent again; every record the backend holds at or above them was delivered
    # but not committed, so the next consumer sends it again.
    delivered_uncommitted = stored(drain_env) - committed_total(drain_env.settings)
    assert delivered_uncommitted > 0, "nothing was left uncommitted: the kill tested nothing"

    services.start_consumer()
    wait_stored(drain_env, total, timeout_s=40)
    # Exactly those were redelivered, and the backend refused each as a duplicate.
    assert wait_until(lambda: stats(drain_env)["duplicates"] == delivered_uncommitted, 20), (
        stats(drain_env)["duplicates"],
        delivered_uncommitted,
    )
    final = stats(drain_env)
    assert final["orders"] == total
    assert sum(int(n) for n in final["per_second"].values()) == total


def test_poison_orders_go_to_the_dlq_and_replay_puts_them_back(
    drain_env: ServiceEnv, services: Services
) -> None:
    settings = drain_env.settings
    write_config(drain_env, rate_per_s=200, burst=20)
    # A backend that answers 422 to these orders: each is refused for good.
    backend = services.start_backend("--reject-attribute", "poison")
    broken = services.start_consumer()
    order_ids = produce_orders(settings, 3, mark="poison", every=1)
    produce_raw(settings, b"{not json", key=b"garbage")

    assert wait_until(lambda: len(list_dead_letters(settings)) >= 4, 30, interval_s=0.5)
    letters = list_dead_letters(settings)
    assert len(letters) == 4 and all(letter.pending for letter in letters)
    by_order = {letter.order_id: letter for letter in letters}
    for order_id in order_ids:
        letter = by_order[order_id]
        assert letter.reason.startswith("backend answered 422")
        assert letter.attempts == 1
        assert letter.source.startswith(f"{settings.kafka.orders_topic}[")
        status = order_status(drain_env, order_id)
        assert status["status"] == "failed" and "422" in status["reason"]
    assert by_order["garbage"].reason.startswith("undecodable record")
    broken.stop(timeout_s=20)

    listing = flashgate_cli(drain_env, "dlq", "list")
    assert "4 dead letters, 4 not replayed" in listing
    assert all(order_id in listing for order_id in order_ids)

    backend.stop(timeout_s=10)
    services.start_backend()  # the backend fixed: it takes them now
    services.start_consumer()
    replayed = flashgate_cli(drain_env, "dlq", "replay")
    assert "replayed 4 dead letters" in replayed
    wait_stored(drain_env, 3, timeout_s=20)
    for order_id in order_ids:
        assert wait_until(
            lambda o=order_id: order_status(drain_env, o).get("status") == "delivered",
            5,
        )
    # The undecodable record comes back once more, marked as replayed once.
    assert wait_until(lambda: len(list_dead_letters(settings)) >= 5, 20, interval_s=0.5)
    letters = list_dead_letters(settings)
    assert [letter.pending for letter in letters] == [False] * 4 + [True]
    assert letters[-1].order_id == "garbage" and letters[-1].replayed_before == 1
    # A second replay does not repeat the first: only the new letter goes.
    assert "replayed 1 dead letters" in flashgate_cli(drain_env, "dlq", "replay")
    assert stats(drain_env)["orders"] == 3


def flashgate_cli(env: ServiceEnv, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "flashgate", *args],
        env=env.process_env(), capture_output=True, text=True, timeout=60,
        cwd=os.getcwd(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout

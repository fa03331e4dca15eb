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
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
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
from tests.rate_envelope import excess_over_rate, mean_rate, within
from tests.services import ServiceEnv, Services, http_json, wait_until

# Above the sum of the longest test's own bounds (~290 s: the poison test's waits and
# CLI timeouts), which the project's global 120 s would cut short with no message.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(330)]

# What the service_env fixture sets for every test; these tests set rates in the file.
FILE_KEYS = ("FLASHGATE_DRAIN_RATE_PER_S", "FLASHGATE_DRAIN_BURST")
# How much closer than their grants two orders may be stored (the HTTP request between
# the limiter and the backend's clock), on a shared 2-core box.
STORE_LAG_S = 0.1


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


def stored_times(env: ServiceEnv) -> list[float]:
    """When the backend stored each order, by its own clock: its store's `stored_at`
    column, read from the SQLite file it writes (each order is committed as it is put)."""
    path = env.root / "backend.sqlite3"
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT stored_at FROM orders ORDER BY stored_at").fetchall()
    return [float(row[0]) for row in rows]


def assert_within_envelope(times: list[float], rate: float, burst: float) -> None:
    """No interval of the backend's timestamps holds more than rate x elapsed + burst,
    the drain limiter's own bound, and the phase is not empty."""
    assert len(times) >= 2, times
    # Requests granted STORE_LAG_S apart may be stored closer together; +1 for the
    # grant made as an interval begins.
    allowed = burst + 1 + rate * STORE_LAG_S
    excess = excess_over_rate(times, rate)
    assert excess <= allowed, f"{excess:.1f} over {rate}/s, allowed {allowed:.1f}"


def wait_quiet(env: ServiceEnv, quiet_s: float, timeout_s: float) -> None:
    """Until the backend's count has not moved for `quiet_s` (a bounded poll)."""
    deadline = time.monotonic() + timeout_s
    count, since = stored(env), time.monotonic()
    while time.monotonic() - since < quiet_s:
        assert time.monotonic() < deadline, f"the backend never went quiet: {stats(env)}"
        time.sleep(0.05)
        now_count = stored(env)
        if now_count != count:
            count, since = now_count, time.monotonic()


def progress_shows(env: ServiceEnv, rate: float, reason: str | None = None) -> bool:
    """The drain group reports `rate` as applied (and `reason`, if given)."""
    current = read_progress(env)
    return (
        current is not None
        and current.effective_rate == rate
        and (reason is None or current.reason == reason)
    )


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
    times = stored_times(drain_env)
    assert len(times) == total
    assert_within_envelope(times, rate, burst)
    # Lower bounds are loose: on a shared 2-core box a starved consumer loses tokens.
    assert mean_rate(times) >= rate * 0.8, mean_rate(times)
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
    wait_stored(drain_env, stored(drain_env) + 250, timeout_s=30)  # about 2.5 s at 100/s

    # Ops lower the rate: once the group reports it applied, the backend sees 40/s.
    changed = time.time()
    drain_control(drain_env, "rate", 40)
    assert wait_until(lambda: progress_shows(drain_env, 40, "override"), 5)
    lowered = time.time()
    wait_stored(drain_env, stored(drain_env) + 120, timeout_s=30)  # about 3 s at 40/s

    # Paused: once the group reports it, nothing more reaches the backend after what was
    # already on the wire, and it stays so while paused.
    paused = time.time()
    drain_control(drain_env, "paused", True)
    assert wait_until(lambda: progress_shows(drain_env, 0, "paused"), 5)
    pause_applied = time.time()
    wait_quiet(drain_env, quiet_s=1.5, timeout_s=10)

    # Resumed, override cleared, and the file raised to 300/s: the new ceiling applies.
    resumed = time.time()
    drain_control(drain_env, "paused", False)
    drain_control(drain_env, "rate", None)
    write_config(drain_env, rate_per_s=300, burst=burst)
    assert wait_until(lambda: progress_shows(drain_env, 300), 10)
    raised = time.time()
    wait_stored(drain_env, stored(drain_env) + 600, timeout_s=30)  # about 2 s at 300/s
    raised_until = time.time()

    times = stored_times(drain_env)
    # Each phase from a second after its change was reported applied: what was granted
    # under the previous rate has been stored by then.
    before = within(times, first, changed)
    assert_within_envelope(before, 100, burst)
    assert mean_rate(before) >= 70, mean_rate(before)
    at_40 = within(times, lowered + 1, paused)
    assert_within_envelope(at_40, 40, burst)
    assert mean_rate(at_40) >= 25, mean_rate(at_40)
    assert within(times, pause_applied + 1, resumed) == []
    at_300 = within(times, raised + 1, raised_until)
    assert_within_envelope(at_300, 300, burst)
    assert mean_rate(at_300) >= 200, mean_rate(at_300)

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
    # The schedule turns at `switch` by the clock: wait for the group to report it.
    assert wait_until(lambda: progress_shows(drain_env, 250), 20)
    wait_stored(drain_env, stored(drain_env) + 500, timeout_s=30)  # about 2 s at 250/s
    ended = time.time()
    times = stored_times(drain_env)
    slow = within(times, first, switch)
    fast = within(times, switch + 1, ended)
    assert_within_envelope(slow, 50, burst)
    assert mean_rate(slow) >= 35, mean_rate(slow)
    assert_within_envelope(fast, 250, burst)
    assert mean_rate(fast) >= 180, mean_rate(fast)
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
    faults = f"{drain_env.backend_url}/admin/faults"
    http_json("PUT", faults, {"outage_seconds": 2})
    assert wait_until(lambda: http_json("GET", faults)["outage_remaining"] == 0, 10)
    wait_stored(drain_env, stored(drain_env) + 50, timeout_s=20)

    # 2. The backend is gone (connection refused): the gate trips, partitions pause,
    #    the consumer stays in its group and probes until the backend is back.
    backend.stop(timeout_s=10)
    assert wait_until(lambda: "pausing partitions (backend down)" in log_text(consumer), 20), (
        log_text(consumer)[-2000:]
    )
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
    # A request the backend had already read may still be stored after the kill.
    wait_quiet(drain_env, quiet_s=1.0, timeout_s=15)
    # Frozen now: every record below the group's committed offsets was delivered and is
    # never sent again; every record the backend holds at or above them was delivered
    # but not committed, so the next consumer sends it again.
    committed = committed_total(drain_env.settings)
    delivered_uncommitted = stored(drain_env) - committed
    assert delivered_uncommitted > 0, "nothing was left uncommitted: the kill tested nothing"
    assert stats(drain_env)["duplicates"] == 0

    third = services.start_consumer()
    wait_stored(drain_env, total, timeout_s=40)
    # Exactly those were redelivered, and the backend refused each as a duplicate.
    assert wait_until(lambda: stats(drain_env)["duplicates"] == delivered_uncommitted, 20), (
        stats(drain_env)["duplicates"],
        delivered_uncommitted,
    )
    # The third consumer sent everything from the committed offsets on, the refused
    # redeliveries included (a duplicate answer counts as delivered).
    third.stop(timeout_s=20)
    delivered = int(log_text(third).rsplit("stopped: delivered ", 1)[1].split(",")[0])
    assert delivered == total - committed, (delivered, total, committed)
    final = stats(drain_env)
    assert final["orders"] == total
    assert final["duplicates"] == delivered_uncommitted
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

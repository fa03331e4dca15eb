"""Tests of the reference slow order backend (store, capacity, faults, HTTP app, process)."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from order_consumer.backend_auth import client_authorization
from reference_backend.app import create_app
from reference_backend.capacity import CapacityLimiter, TokenBucket
from reference_backend.config import BackendConfig
from reference_backend.faults import FaultInjector, Faults
from reference_backend.main import describe, parse_config
from reference_backend.store import OrderStore

REPO_ROOT = Path(__file__).resolve().parents[1]

T = TypeVar("T")
Client = TestClient[web.Request, web.Application]
Reply = tuple[int, dict[str, Any], dict[str, str]]


class FakeClock:
    """A settable clock whose sleep advances it instead of waiting."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def serve(
    config: BackendConfig,
    scenario: Callable[[Client], Awaitable[T]],
    **clocks: Callable[[], float],
) -> T:
    """Run ``scenario`` against a fresh app on a test server, then shut it all down."""

    async def run() -> T:
        async with TestClient(TestServer(create_app(config, **clocks))) as client:
            return await scenario(client)

    return asyncio.run(run())


async def post(
    client: Client,
    order_id: str | None,
    body: dict[str, Any] | bytes | None = None,
) -> Reply:
    headers = {"Content-Type": "application/json"}
    if order_id is not None:
        headers["Idempotency-Key"] = order_id
    if body is None:
        body = {"order_id": order_id, "sku": "A1", "qty": 1}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with client.post("/orders", data=data, headers=headers) as resp:
        return resp.status, await resp.json(), dict(resp.headers)


async def get(client: Client, path: str) -> Reply:
    async with client.get(path) as resp:
        return resp.status, await resp.json(), dict(resp.headers)


async def put(client: Client, path: str, payload: Any) -> Reply:
    async with client.put(path, data=json.dumps(payload).encode()) as resp:
        return resp.status, await resp.json(), dict(resp.headers)


def db_config(tmp_path: Path, **overrides: Any) -> BackendConfig:
    return BackendConfig(db_path=tmp_path / "backend" / "orders.sqlite3", **overrides)


def retry_after(headers: dict[str, str]) -> int:
    value = int(headers["Retry-After"])
    assert value >= 1
    return value


# -- HTTP: orders and stats --------------------------------------------------------------


def test_new_order_then_redelivery_is_duplicate(tmp_path: Path) -> None:
    async def scenario(client: Client) -> None:
        status, payload, _ = await post(client, "o-1")
        assert (status, payload) == (201, {"order_id": "o-1", "stored": True})
        status, payload, _ = await post(client, "o-2")
        assert (status, payload) == (201, {"order_id": "o-2", "stored": True})
        status, payload, _ = await post(client, "o-2", {"order_id": "o-2", "sku": "changed"})
        assert (status, payload) == (200, {"order_id": "o-2", "duplicate": True})

        status, stats, _ = await get(client, "/stats")
        assert status == 200
        assert stats["orders"] == 2
        assert stats["duplicates"] == 1
        assert sum(stats["per_second"].values()) == 2

        status, record, _ = await get(client, "/orders/o-2")
        assert status == 200
        assert record["order_id"] == "o-2"
        assert record["sku"] == "A1"  # the first delivery wins
        assert abs(record["stored_at"] - time.time()) < 60

        status, payload, _ = await get(client, "/orders/unknown")
        assert status == 404
        assert payload["order_id"] == "unknown"

    serve(db_config(tmp_path), scenario)


def test_body_without_order_id_is_stored_under_header_key(tmp_path: Path) -> None:
    async def scenario(client: Client) -> None:
        status, payload, _ = await post(client, "k-1", {"sku": "B2"})
        assert (status, payload) == (201, {"order_id": "k-1", "stored": True})
        status, record, _ = await get(client, "/orders/k-1")
        assert status == 200
        assert record["order_id"] == "k-1"
        assert record["sku"] == "B2"
        assert "stored_at" in record

    serve(db_config(tmp_path), scenario)


def test_bad_requests_answer_400_and_store_nothing(tmp_path: Path) -> None:
    cases: list[tuple[str | None, bytes]] = [
        (None, b'{"order_id": "x"}'),  # no Idempotency-Key
        ("", b'{"order_id": "x"}'),  # empty key
        ("   ", b'{"sku": "A1"}'),  # blank key
        ("x", b"not json"),
        ("x", b""),
        ("x", b"[1, 2]"),
        ("x", b'"a string"'),
        ("x", b"\xff\xfe{}"),
        ("x", b'{"order_id": "y"}'),  # body disagrees with the header
        ("x", b'{"order_id": ["x"]}'),
    ]

    async def scenario(client: Client) -> None:
        for key, body in cases:
            status, payload, _ = await post(client, key, body)
            assert status == 400, (key, body, payload)
            assert "error" in payload
        # A numeric order_id equal to the key is accepted.
        status, _, _ = await post(client, "42", b'{"order_id": 42}')
        assert status == 201
        _, stats, _ = await get(client, "/stats")
        assert (stats["orders"], stats["duplicates"]) == (1, 0)

    serve(db_config(tmp_path), scenario)


def test_stats_per_second_groups_by_storage_second(tmp_path: Path) -> None:
    instants = iter([1_000.1, 1_000.9, 1_001.5, 1_002.0])

    async def scenario(client: Client) -> None:
        for order_id in ("a", "b", "c"):
            assert (await post(client, order_id))[0] == 201
        assert (await post(client, "a"))[0] == 200  # a duplicate takes no timestamp slot
        status, stats, _ = await get(client, "/stats")
        assert status == 200
        assert stats == {
            "orders": 3, "duplicates": 1, "per_second": {"1000": 2, "1001": 1}, "tokens_issued": 0,
            "refused_overloaded": 0,
        }  # fmt: skip
        _, record, _ = await get(client, "/orders/c")
        assert record["stored_at"] == pytest.approx(1_001.5)

    serve(db_config(tmp_path), scenario, wall_clock=lambda: next(instants))


def test_restart_keeps_orders_and_duplicates(tmp_path: Path) -> None:
    config = db_config(tmp_path)

    async def first_run(client: Client) -> None:
        assert (await post(client, "r-1"))[0] == 201
        assert (await post(client, "r-2"))[0] == 201
        assert (await post(client, "r-1"))[0] == 200

    async def second_run(client: Client) -> dict[str, Any]:
        status, payload, _ = await post(client, "r-2")
        assert (status, payload) == (200, {"order_id": "r-2", "duplicate": True})
        status, record, _ = await get(client, "/orders/r-1")
        assert status == 200
        assert record["order_id"] == "r-1"
        return (await get(client, "/stats"))[1]

    serve(config, first_run)
    stats = serve(config, second_run)
    assert stats["orders"] == 2
    assert stats["duplicates"] == 2
    assert sum(stats["per_second"].values()) == 2


# -- store -------------------------------------------------------------------------------


def test_store_reopen_keeps_orders_counters_and_seconds(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "orders.sqlite3"
    clock = FakeClock(5_000.25)
    with OrderStore(path, clock=clock) as store:
        assert store.put("a", b'{"order_id": "a"}') is True
        clock.now = 5_001.75
        assert store.put("b", '{"order_id": "b"}') is True
        assert store.put("a", b'{"order_id": "a", "again": true}') is False
        stored = store.get("a")
        assert stored is not None
        assert (stored.body, stored.stored_at) == ('{"order_id": "a"}', 5_000.25)
        assert store.get("missing") is None
    assert not store.is_open
    store.close()  # closing twice is harmless
    with pytest.raises(RuntimeError):
        store.put("c", b"{}")

    reopened = OrderStore(path).open()
    try:
        stats = reopened.stats()
        assert (stats.orders, stats.duplicates) == (2, 1)
        assert stats.per_second == {5_000: 1, 5_001: 1}
        assert reopened.put("b", b"{}") is False
        assert reopened.stats().duplicates == 2
    finally:
        reopened.close()


def test_store_batched_commits_are_flushed_on_close(tmp_path: Path) -> None:
    path = tmp_path / "orders.sqlite3"
    store = OrderStore(path, batch_commits=True).open()
    assert store.put("a", b"{}") is True
    store.flush()
    assert store.put("b", b"{}") is True
    assert store.put("a", b"{}") is False
    store.close()
    with OrderStore(path) as again:
        stats = again.stats()
        assert (stats.orders, stats.duplicates) == (2, 1)


# -- capacity over HTTP ------------------------------------------------------------------


def test_rate_limit_refuses_beyond_burst_with_retry_after(tmp_path: Path) -> None:
    config = db_config(tmp_path, rate=50, burst=5, max_wait=0)

    async def scenario(client: Client) -> tuple[list[Reply], float, dict[str, Any]]:
        started = time.monotonic()
        replies = await asyncio.gather(*(post(client, f"o-{i}") for i in range(100)))
        elapsed = time.monotonic() - started
        return list(replies), elapsed, (await get(client, "/stats"))[1]

    replies, elapsed, stats = serve(config, scenario)
    created = [r for r in replies if r[0] == 201]
    refused = [r for r in replies if r[0] == 503]
    assert len(created) + len(refused) == 100
    # The burst of five, plus whatever refilled (50/s) while the requests were in flight.
    assert 5 <= len(created) <= 5 + 50 * elapsed + 1
    for _, payload, headers in refused:
        assert payload == {"error": "overloaded"}
        retry_after(headers)
    assert stats["orders"] == len(created)


def test_rate_limit_is_exact_with_a_frozen_clock(tmp_path: Path) -> None:
    config = db_config(tmp_path, rate=50, burst=5, max_wait=0)

    async def scenario(client: Client) -> tuple[list[int], Any]:
        replies = await asyncio.gather(*(post(client, f"o-{i}") for i in range(100)))
        return [status for status, _, _ in replies], (await get(client, "/stats"))[1]

    statuses, stats = serve(config, scenario, monotonic=FakeClock())
    assert statuses.count(201) == 5
    assert statuses.count(503) == 95
    assert stats["refused_overloaded"] == 95  # what B2 reports as the backend's refusals


def test_requests_wait_for_a_token_within_max_wait(tmp_path: Path) -> None:
    config = db_config(tmp_path, rate=20, burst=1, max_wait=1.0)

    async def scenario(client: Client) -> tuple[list[int], float]:
        started = time.monotonic()
        replies = await asyncio.gather(*(post(client, f"w-{i}") for i in range(3)))
        return [r[0] for r in replies], time.monotonic() - started

    statuses, elapsed = serve(config, scenario)
    assert statuses == [201, 201, 201]
    assert elapsed >= 0.08  # two of them waited 50 ms and 100 ms for their tokens


def test_concurrency_limit_refuses_when_no_slot_frees_in_time(tmp_path: Path) -> None:
    config = db_config(tmp_path, concurrency=1, latency_ms=200, max_wait=0)

    async def scenario(client: Client) -> list[Reply]:
        return list(await asyncio.gather(post(client, "c-1"), post(client, "c-2")))

    replies = serve(config, scenario)
    assert sorted(r[0] for r in replies) == [201, 503]
    refused = next(r for r in replies if r[0] == 503)
    assert refused[1] == {"error": "overloaded"}
    retry_after(refused[2])


def test_admin_capacity_changes_limits_at_runtime(tmp_path: Path) -> None:
    async def scenario(client: Client) -> None:
        status, capacity, _ = await put(
            client, "/admin/capacity", {"rate": 1, "burst": 1, "max_wait": 0}
        )
        assert status == 200
        assert capacity == {"rate": 1.0, "burst": 1.0, "concurrency": 0, "max_wait": 0.0}
        assert (await post(client, "a-1"))[0] == 201
        status, payload, headers = await post(client, "a-2")
        assert (status, payload) == (503, {"error": "overloaded"})
        retry_after(headers)

        status, capacity, _ = await put(client, "/admin/capacity", {"rate": 0, "concurrency": 4})
        assert status == 200
        assert (capacity["rate"], capacity["concurrency"]) == (0.0, 4)
        assert (await post(client, "a-2"))[0] == 201
        assert (await get(client, "/admin/capacity"))[1] == capacity

        for bad in (
            {"rate": -1},
            {"burst": 0.5},
            {"concurrency": 1.5},
            {"rate": True},
            {"speed": 3},
            [1],
        ):
            status, payload, _ = await put(client, "/admin/capacity", bad)
            assert status == 400, bad
            assert "error" in payload

    serve(db_config(tmp_path), scenario)


# -- faults over HTTP --------------------------------------------------------------------


def test_error_share_is_deterministic_with_a_seed(tmp_path: Path) -> None:
    config = db_config(tmp_path, error_share=0.5, seed=7)
    draws = random.Random(7)
    expected = [500 if draws.random() < 0.5 else 201 for _ in range(30)]

    async def scenario(client: Client) -> tuple[list[int], dict[str, Any]]:
        statuses = [(await post(client, f"e-{i}"))[0] for i in range(30)]
        return statuses, (await get(client, "/stats"))[1]

    statuses, stats = serve(config, scenario)
    assert statuses == expected
    assert 0 < statuses.count(500) < 30
    assert stats["orders"] == statuses.count(201)


def test_injected_500_stores_nothing_and_redelivery_succeeds(tmp_path: Path) -> None:
    async def scenario(client: Client) -> None:
        assert (await put(client, "/admin/faults", {"error_share": 1}))[0] == 200
        status, payload, _ = await post(client, "f-1")
        assert (status, payload) == (500, {"error": "injected failure"})
        assert (await get(client, "/orders/f-1"))[0] == 404
        assert (await put(client, "/admin/faults", {"error_share": 0}))[0] == 200
        assert (await post(client, "f-1"))[0] == 201

    serve(db_config(tmp_path), scenario)


def test_outage_via_admin_faults(tmp_path: Path) -> None:
    async def scenario(client: Client) -> None:
        assert (await post(client, "before"))[0] == 201
        status, faults, _ = await put(client, "/admin/faults", {"outage_seconds": 30})
        assert status == 200
        assert 29 < faults["outage_remaining"] <= 30

        status, payload, headers = await post(client, "during")
        assert (status, payload) == (503, {"error": "outage"})
        assert 29 <= retry_after(headers) <= 30
        assert (await get(client, "/healthz"))[0] == 503
        assert (await get(client, "/orders/before"))[0] == 503
        status, stats, _ = await get(client, "/stats")  # stats always answer
        assert (status, stats["orders"]) == (200, 1)

        assert (await put(client, "/admin/faults", {"outage_seconds": 0}))[0] == 200
        assert (await get(client, "/healthz"))[:2] == (200, {"status": "ok"})

    async def short_outage(client: Client) -> None:
        assert (await put(client, "/admin/faults", {"outage_seconds": 0.2}))[0] == 200
        assert (await post(client, "x"))[0] == 503
        await asyncio.sleep(0.3)
        assert (await post(client, "x"))[0] == 201
        for bad in ({"error_share": 2}, {"latency_ms": -1}, {"outage": 1}, "nope"):
            assert (await put(client, "/admin/faults", bad))[0] == 400, bad

    serve(db_config(tmp_path), scenario)
    serve(db_config(tmp_path), short_outage)


def test_outage_window_from_flags(tmp_path: Path) -> None:
    clock = FakeClock(0.0)
    config = db_config(tmp_path, outage_start=5, outage_seconds=10)

    async def scenario(client: Client) -> None:
        assert (await get(client, "/healthz"))[0] == 200
        assert (await post(client, "t-0"))[0] == 201
        clock.now = 6.0
        status, payload, headers = await post(client, "t-6")
        assert (status, payload) == (503, {"error": "outage"})
        assert retry_after(headers) == 9
        assert (await get(client, "/healthz"))[0] == 503
        clock.now = 15.5
        assert (await post(client, "t-15"))[0] == 201
        assert (await get(client, "/healthz"))[0] == 200

    serve(config, scenario, monotonic=clock)


def test_latency_is_added_to_posts(tmp_path: Path) -> None:
    async def scenario(client: Client) -> float:
        started = time.monotonic()
        assert (await post(client, "l-1"))[0] == 201
        return time.monotonic() - started

    assert serve(db_config(tmp_path, latency_ms=150), scenario) >= 0.14


# -- units: token bucket, limiter, faults, config ------------------------------------------


def test_token_bucket_starts_full_and_refills_up_to_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, 3, clock=clock, sleep=clock.sleep)

    async def run() -> None:
        assert [await bucket.acquire(0) for _ in range(4)] == [True, True, True, False]
        assert bucket.wait_time() == pytest.approx(0.1)
        clock.now += 0.25  # 2.5 tokens
        assert [await bucket.acquire(0) for _ in range(3)] == [True, True, False]
        clock.now += 100  # capped at burst
        assert [await bucket.acquire(0) for _ in range(4)] == [True, True, True, False]
        assert clock.sleeps == []

    asyncio.run(run())


def test_token_bucket_waits_when_within_max_wait() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, 1, clock=clock, sleep=clock.sleep)

    async def run() -> None:
        assert await bucket.acquire(0) is True
        assert await bucket.acquire(0.05) is False  # needs 0.1 s
        assert await bucket.acquire(0.5) is True
        assert clock.sleeps == [pytest.approx(0.1)]

    asyncio.run(run())


def test_token_bucket_reservations_queue_in_arrival_order() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, 1, clock=clock, sleep=clock.sleep)
    assert bucket.try_acquire(0) == 0.0
    assert bucket.try_acquire(1) == pytest.approx(0.1)
    assert bucket.try_acquire(1) == pytest.approx(0.2)
    assert bucket.try_acquire(0.25) is None  # would be 0.3: refused, nothing reserved
    assert bucket.tokens == pytest.approx(-2)
    clock.now += 0.301  # (a hair past 0.3, clear of float rounding)
    assert bucket.try_acquire(0) == 0.0


def test_token_bucket_unlimited_and_reconfigured() -> None:
    clock = FakeClock()
    bucket = TokenBucket(0, clock=clock, sleep=clock.sleep)

    async def run() -> None:
        assert all([await bucket.acquire(0) for _ in range(1000)])
        bucket.configure(100)  # default burst: max(1, rate / 10) = 10, starts full
        assert bucket.burst == 10
        assert sum([await bucket.acquire(0) for _ in range(20)]) == 10
        clock.now += 1
        bucket.configure(100, 2)  # the balance is capped at the new burst
        assert sum([await bucket.acquire(0) for _ in range(5)]) == 2
        assert TokenBucket(5, clock=clock).burst == 1
        with pytest.raises(ValueError):
            bucket.configure(-1)
        with pytest.raises(ValueError):
            bucket.configure(10, 0.5)

    asyncio.run(run())


def test_capacity_limiter_concurrency_and_release() -> None:
    async def run() -> None:
        limiter = CapacityLimiter(0, None, 1)
        first = await limiter.acquire(0)
        assert first.admitted
        refused = await limiter.acquire(0)
        assert not refused.admitted
        assert refused.retry_after >= 1
        waiting = asyncio.create_task(limiter.acquire(1.0))
        await asyncio.sleep(0.01)
        first.release()
        first.release()  # releasing twice frees one slot only
        second = await asyncio.wait_for(waiting, 2)
        assert second.admitted
        assert not (await limiter.acquire(0.01)).admitted
        limiter.configure(concurrency=0)
        assert (await limiter.acquire(0)).admitted
        second.release()

    asyncio.run(run())


def test_fault_injector_outage_window_and_error_share() -> None:
    clock = FakeClock(100.0)
    injector = FaultInjector(Faults(error_share=0.25), seed=3, clock=clock)
    assert injector.outage_remaining() == 0
    injector.schedule_outage(2, 5)
    assert injector.outage_remaining() == 0
    clock.now = 103.0
    assert injector.outage_remaining() == pytest.approx(4)
    clock.now = 107.0
    assert injector.outage_remaining() == 0
    injector.start_outage(1)
    assert injector.outage_remaining() == pytest.approx(1)
    injector.update(outage_seconds=0)
    assert injector.outage_remaining() == 0

    draws = random.Random(3)
    assert [injector.should_fail() for _ in range(50)] == [draws.random() < 0.25 for _ in range(50)]
    injector.update(error_share=0.0, latency_ms=20)
    assert not any(injector.should_fail() for _ in range(50))
    assert injector.latency_seconds == pytest.approx(0.02)
    with pytest.raises(ValueError):
        injector.update(error_share=1.5, latency_ms=5)
    assert injector.latency_seconds == pytest.approx(0.02)  # nothing applied


def test_config_flags_and_validation(tmp_path: Path) -> None:
    config = parse_config(
        [
            "--port", "0", "--db", str(tmp_path / "x.db"), "--rate", "50", "--concurrency", "8",
            "--max-wait", "0.5", "--error-share", "0.1", "--latency-ms", "3",
            "--outage-start", "2", "--outage-seconds", "4", "--seed", "9",
        ]
    )  # fmt: skip
    assert config == BackendConfig(
        port=0,
        db_path=tmp_path / "x.db",
        rate=50,
        concurrency=8,
        max_wait=0.5,
        error_share=0.1,
        latency_ms=3,
        outage_start=2,
        outage_seconds=4,
        seed=9,
    )
    assert config.effective_burst == 5
    assert BackendConfig(rate=3).effective_burst == 1
    assert BackendConfig(rate=30, burst=2).effective_burst == 2
    assert "rate=50/s" in describe(config)
    for bad in ({"error_share": 1.5}, {"rate": -1}, {"burst": 0}, {"concurrency": -1}):
        with pytest.raises(ValueError):
            BackendConfig(**bad)
    with pytest.raises(SystemExit):
        parse_config(["--error-share", "2"])


# -- the real process ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _http(method: str, url: str, body: bytes | None = None, key: str | None = None) -> int:
    request = urllib.request.Request(url, data=body, method=method)
    if key is not None:
        request.add_header("Idempotency-Key", key)
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=2) as resp:
            resp.read()
            status: int = resp.status
            return status
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code


def test_process_serves_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "backend.log"
    db = tmp_path / "db" / "orders.sqlite3"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "reference_backend", "--port", str(port), "--db", str(db)],
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                if _http("GET", f"{base}/healthz") == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "backend did not become healthy within 10 s"
            time.sleep(0.05)
        assert _http("POST", f"{base}/orders", b'{"order_id": "p-1"}', key="p-1") == 201
        assert _http("POST", f"{base}/orders", b'{"order_id": "p-1"}', key="p-1") == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    # A clean close checkpoints and removes the WAL file.
    assert not db.with_name(db.name + "-wal").exists()
    output = log_path.read_text()
    assert "reference backend starting" in output
    assert f":{port}" in output
    with OrderStore(db) as store:
        assert store.stats().orders == 1
        assert store.stats().duplicates == 1


# -- what real backends ask: tokens, refusals, marked orders -------------------------------


async def post_with(client: Client, order_id: str, authorization: str | None) -> int:
    headers = {"Content-Type": "application/json", "Idempotency-Key": order_id}
    if authorization is not None:
        headers["Authorization"] = authorization
    body = json.dumps({"order_id": order_id}).encode()
    async with client.post("/orders", data=body, headers=headers) as resp:
        if resp.status == 401:
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        return resp.status


def test_required_bearer_token_guards_orders_but_not_stats(tmp_path: Path) -> None:
    async def scenario(client: Client) -> None:
        assert await post_with(client, "o-1", None) == 401
        assert await post_with(client, "o-1", "Bearer wrong") == 401
        assert await post_with(client, "o-1", "Bearer s3cret") == 201
        assert (await get(client, "/stats"))[1]["orders"] == 1

    serve(db_config(tmp_path, require_token="s3cret"), scenario)


def test_oauth2_tokens_are_issued_to_the_client_and_expire(tmp_path: Path) -> None:
    clock = FakeClock()

    async def token(client: Client, auth: tuple[str, str]) -> tuple[int, dict[str, Any]]:
        async with client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "scope": "orders"},
            headers={"Authorization": client_authorization(*auth)},
        ) as resp:
            return resp.status, await resp.json()

    async def scenario(client: Client) -> None:
        status, answer = await token(client, ("drain", "wrong"))
        assert status == 401 and answer["error"] == "invalid_client"
        status, answer = await token(client, ("drain", "pa:ss"))
        assert status == 200 and answer["expires_in"] == 5 and answer["token_type"] == "Bearer"
        bearer = f"Bearer {answer['access_token']}"
        assert await post_with(client, "o-1", bearer) == 201
        clock.now += 5
        assert await post_with(client, "o-2", bearer) == 401
        _, fresh = await token(client, ("drain", "pa:ss"))
        assert fresh["access_token"] != answer["access_token"]
        assert await post_with(client, "o-2", f"Bearer {fresh['access_token']}") == 201

    serve(
        db_config(tmp_path, oauth2_client="drain:pa:ss", token_ttl_s=5),
        scenario,
        monotonic=clock,
    )


def test_refusal_window_answers_one_status_to_every_order_then_ends(tmp_path: Path) -> None:
    clock = FakeClock()

    async def scenario(client: Client) -> None:
        status, body, _ = await post(client, "o-1")
        assert status == 401 and "refused" in body["error"]
        clock.now += 10
        assert (await post(client, "o-1"))[0] == 201
        status, faults, _ = await put(
            client, "/admin/faults", {"refuse_status": 404, "refuse_seconds": 3}
        )
        assert status == 200 and faults["refuse_status"] == 404
        assert (await post(client, "o-2"))[0] == 404
        assert (await put(client, "/admin/faults", {"refuse_status": 200}))[0] == 400
        clock.now += 3
        assert (await post(client, "o-2"))[0] == 201
        assert (await get(client, "/stats"))[1]["orders"] == 2

    serve(db_config(tmp_path, refuse_status=401, refuse_seconds=10), scenario, monotonic=clock)


def test_orders_marked_with_the_reject_attribute_get_422(tmp_path: Path) -> None:
    async def scenario(client: Client) -> None:
        marked = {"order_id": "o-1", "attributes": {"reject": "yes"}}
        status, body, _ = await post(client, "o-1", marked)
        assert status == 422 and "reject" in body["error"]
        plain = {"order_id": "o-2", "attributes": {"channel": "app"}}
        assert (await post(client, "o-2", plain))[0] == 201
        assert (await get(client, "/stats"))[1]["orders"] == 1

    serve(db_config(tmp_path, reject_attribute="reject"), scenario)


def test_new_flags_are_validated(tmp_path: Path) -> None:
    for bad in (
        {"refuse_status": 200},
        {"oauth2_client": "no-secret"},
        {"token_ttl_s": 0},
        {"tls_cert": tmp_path / "c.pem"},
    ):
        with pytest.raises(ValueError):
            db_config(tmp_path, **bad)
    config = parse_config(
        ["--require-token", "t0ken", "--refuse-status", "403", "--refuse-seconds", "20"]
    )
    assert config.require_token == "t0ken" and config.refuse_status == 403
    assert "t0ken" not in describe(config) and "auth=bearer" in describe(config)

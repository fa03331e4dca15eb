"""Debian's haproxy with the shipped configuration in front of two real gateways.

Both gateways run on the session's Kafka and Redis; haproxy runs
deploy/compose/haproxy/haproxy.cfg with its addresses moved to the loopback
(tests/haproxy_support.py says exactly how). Checked: orders spread over both;
only the public API passes the proxy; a gateway whose /readyz fails leaves the pool
(Redis refuses the PING of its readiness check: the gateway logs in as its own Redis
user, which loses that one command, so no other client and none of its connections
is disturbed); and a gateway stopped with
SIGTERM in the middle of a load loses no request: every order sent gets a 202, none a
connection error or a 5xx, thanks to redispatch and the retries. A crowd of more
orders at once than the gateways take gets the proxy's own 503 (the gateway's
shape, Retry-After 1-3 s) for what cannot start within `timeout queue`, shed up
front and held by the tarpit once the queue is past its bound, and the proxy keeps
reusing its gateway connections through it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import signal
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from flashgate.stack.kafka_broker import KafkaBroker
from flashgate.stack.ports import free_port
from flashgate.stack.process import ManagedProcess
from flashgate.stack.redis_server import RedisServer
from tests.gateway_client import OPEN_RATES, new_env
from tests.haproxy_support import HAPROXY_CFG, Proxy, running_haproxy
from tests.services import ServiceEnv, Services, load_sale, wait_until

pytestmark = pytest.mark.e2e

STOCK = 50_000  # never sold out: the crowd alone may take 6,000
LOAD_ORDERS = 600
LOAD_CONCURRENCY = 20
# Far more at once than two gateways of `maxconn 128` take or than start within 100 ms.
CROWD = 1_500
CROWD_ROUNDS = 4  # orders per crowd connection, one after another
# A gateway connection may close and be reopened now and then (keep-alive limits).
REOPENED_SLACK = 32
# haproxy checks every 2 s and needs 2 results to change a server's state.
POOL_CHANGE_TIMEOUT_S = 20.0
HTTP_TIMEOUT_S = 30.0


@dataclass
class Gateway:
    process: ManagedProcess
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Pool:
    env: ServiceEnv
    proxy: Proxy
    steady: Gateway
    flaky: Gateway
    redis: redis.Redis
    flaky_user: str


def _http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _samples(url: str, name: str) -> list[tuple[dict[str, str], float]]:
    status, text = _http_get(f"{url}/metrics")
    assert status == 200, text
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def _active_servers(proxy: Proxy) -> float:
    """haproxy's own count of servers passing their checks in the public backend."""
    samples = _samples(proxy.url("stats"), "haproxy_backend_active_servers")
    return sum(value for labels, value in samples if labels.get("proxy") == "gateways")


def _gateway_maxconn() -> int:
    """The public backend's `default-server ... maxconn`, read from the shipped file."""
    found = re.search(r"default-server .*\bmaxconn (\d+)", HAPROXY_CFG.read_text())
    assert found, "haproxy.cfg has no default-server maxconn"
    return int(found[1])


def _public_backend(proxy: Proxy, metric: str) -> float:
    """One of haproxy's own counters for the public backend (`gateways`)."""
    samples = _samples(proxy.url("stats"), metric)
    return sum(value for labels, value in samples if labels.get("proxy") == "gateways")


def _gateway_connections_opened(proxy: Proxy) -> float:
    """Connections haproxy has opened to the public backend's gateways."""
    return _public_backend(proxy, "haproxy_backend_connection_attempts_total")


def _shed_by_tarpit(proxy: Proxy) -> float:
    """Requests the public backend's tarpit rule shed (haproxy counts them as denied)."""
    return _public_backend(proxy, "haproxy_backend_requests_denied_total")


def _dropped_logs(proxy: Proxy) -> float:
    """Log lines haproxy dropped rather than block: its threads share the log's fd and
    a thread that finds another writing it drops its line and counts it here."""
    samples = _samples(proxy.url("stats"), "haproxy_process_dropped_logs_total")
    assert samples, "haproxy exports no haproxy_process_dropped_logs_total"
    return sum(value for _, value in samples)


def _tarpit_ms() -> int:
    """How long the shipped file holds a tarpitted request before its 503."""
    found = re.search(r"timeout tarpit (\d+)ms", HAPROXY_CFG.read_text())
    assert found, "haproxy.cfg has no `timeout tarpit`"
    return int(found[1])


# An `option httplog` line's timers TR/Tw/Tc/Tr/Ta, status, and termination state.
_LOG_LINE = re.compile(r" gateways/\S+ (-?\d+)/(-?\d+)/-?\d+/-?\d+/-?\d+ (\d{3}) .* (\S{4}) \d+/")


def _tarpit_waits_ms(log: str) -> list[int]:
    """The public backend's tarpitted requests in haproxy's log (termination state `PT`:
    denied by the proxy, held by its tarpit), each with its wait (Tw, in ms)."""
    waits = []
    for line in log.splitlines():
        found = _LOG_LINE.search(line)
        if found and found[4].startswith("PT"):
            assert found[3] == "503", line
            waits.append(int(found[2]))
    return waits


def _orders_answered(gateway: Gateway) -> float:
    samples = _samples(gateway.url, "flashgate_gateway_requests_total")
    return sum(value for labels, value in samples if labels["route"] == "/v1/orders")


def _order() -> dict[str, Any]:
    return {"sale_id": "s", "sku": "A", "quantity": 1, "user_id": f"u-{uuid.uuid4().hex[:12]}"}


async def _send_orders(
    url: str, count: int, *, after: tuple[int, Callable[[], None]] | None = None
) -> list[str]:
    """POST `count` orders with Idempotency-Keys; each outcome is a status or an error name.

    `after=(n, action)` runs `action` once `n` answers have come back, mid-load.
    """
    outcomes: list[str] = []
    queue = list(range(count))
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def worker() -> None:
            while queue:
                queue.pop()
                headers = {"Idempotency-Key": uuid.uuid4().hex}
                try:
                    async with session.post(url, json=_order(), headers=headers) as response:
                        await response.read()
                        outcomes.append(str(response.status))
                except (aiohttp.ClientError, TimeoutError) as exc:
                    outcomes.append(type(exc).__name__)
                if after is not None and len(outcomes) == after[0]:
                    after[1]()

        await asyncio.gather(*(worker() for _ in range(LOAD_CONCURRENCY)))
    return outcomes


@pytest.fixture(scope="module")
def pool(
    kafka_broker: KafkaBroker,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pool]:
    root = tmp_path_factory.mktemp("haproxy")
    env = new_env(kafka_broker, redis_server, root)
    # Both gateways must accept the same admin token; one generated file would race.
    env.variables["FLASHGATE_ADMIN_TOKEN"] = uuid.uuid4().hex
    client = redis.Redis.from_url(redis_server.url)
    # The flaky gateway logs in as its own Redis user: taking PING from that user
    # fails this gateway's readiness and nothing else.
    user, password = f"gw-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    client.acl_setuser(
        user, enabled=True, passwords=[f"+{password}"], keys=["*"], channels=["*"],
        commands=["+@all"],
    )  # fmt: skip
    flaky_port, flaky_admin = free_port(), free_port()
    services = Services(env)
    try:
        steady_port = int(env.variables["FLASHGATE_GATEWAY_PORT"])
        steady = Gateway(services.start_gateway(), steady_port)
        flaky = Gateway(
            services.start_gateway(
                FLASHGATE_GATEWAY_PORT=str(flaky_port),
                FLASHGATE_ADMIN_PORT=str(flaky_admin),
                FLASHGATE_REDIS_URL=f"redis://{user}:{password}@127.0.0.1:{redis_server.port}/0",
            ),
            flaky_port,
        )
        load_sale(env, "s", {"stock": {"A": STOCK}, "rates": OPEN_RATES})
        admin_ports = [int(env.variables["FLASHGATE_ADMIN_PORT"]), flaky_admin]
        servers = {"gateways": [steady_port, flaky_port], "gateway_admin": admin_ports}
        with running_haproxy(root / "haproxy", servers) as proxy:
            assert wait_until(lambda: _active_servers(proxy) == 2, POOL_CHANGE_TIMEOUT_S)
            yield Pool(env, proxy, steady, flaky, client, user)
    finally:
        services.stop_all()
        try:
            client.acl_deluser(user)
            client.flushdb()
        finally:
            client.close()


def test_orders_spread_over_both_gateways(pool: Pool) -> None:
    before = [_orders_answered(pool.steady), _orders_answered(pool.flaky)]
    outcomes = asyncio.run(_send_orders(f"{pool.proxy.url('public')}/v1/orders", 100))
    assert outcomes == ["202"] * 100
    after = [_orders_answered(pool.steady), _orders_answered(pool.flaky)]
    served = [a - b for a, b in zip(after, before, strict=True)]
    assert sum(served) == 100
    # leastconn favours whichever replica answers faster at the moment: both must
    # take a share, not an equal one.
    assert min(served) >= 5, f"one gateway took (almost) everything: {served}"


def test_only_the_public_api_passes_the_proxy(pool: Pool) -> None:
    public = pool.proxy.url("public")
    for path in ("/metrics", "/%6detrics", "/readyz", "/openapi.json", "/admin/v1/drain"):
        assert _http_get(f"{public}{path}")[0] == 404, path
    # The admin frontend reaches the admin API, which still wants its token.
    assert _http_get(f"{pool.proxy.url('admin')}/admin/v1/drain")[0] == 401


def test_a_gateway_failing_readiness_leaves_the_pool(pool: Pool) -> None:
    pool.redis.acl_setuser(pool.flaky_user, enabled=True, commands=["-ping"])
    try:
        assert _http_get(f"{pool.flaky.url}/readyz")[0] == 503 or wait_until(
            lambda: _http_get(f"{pool.flaky.url}/readyz")[0] == 503, 5
        )
        assert wait_until(lambda: _active_servers(pool.proxy) == 1, POOL_CHANGE_TIMEOUT_S)
        before = _orders_answered(pool.flaky)
        outcomes = asyncio.run(_send_orders(f"{pool.proxy.url('public')}/v1/orders", 50))
        assert outcomes == ["202"] * 50
        assert _orders_answered(pool.flaky) == before, "an order went to the unready gateway"
    finally:
        pool.redis.acl_setuser(pool.flaky_user, enabled=True, commands=["+ping"])
    assert wait_until(lambda: _active_servers(pool.proxy) == 2, POOL_CHANGE_TIMEOUT_S)


@dataclass(frozen=True)
class Answer:
    status: int
    retry_after: str | None
    body: bytes


async def _crowd(url: str, count: int, rounds: int) -> list[Answer]:
    """`count` shoppers at once, each on its own connection sending `rounds` orders one
    after another: every order's answer."""
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=count)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def one() -> Answer:
            async with session.post(url, json=_order()) as response:
                body = await response.read()
                return Answer(response.status, response.headers.get("Retry-After"), body)

        async def shopper() -> list[Answer]:
            return [await one() for _ in range(rounds)]

        shoppers = await asyncio.gather(*(shopper() for _ in range(count)))
        return list(itertools.chain.from_iterable(shoppers))


def test_a_crowd_past_the_gateways_gets_503_from_the_proxy(pool: Pool) -> None:
    """More orders at once than the gateways take (`maxconn` each) and than can start
    within `timeout queue`: the rest are answered by the proxy, 503 in the gateway's
    own shape with a Retry-After of 1-3 s; nothing else fails. What would only time
    out in the queue is not queued: the tarpit sheds it, its 503 held, not sent at once."""
    opened_before = _gateway_connections_opened(pool.proxy)
    tarpitted_before = _shed_by_tarpit(pool.proxy)
    dropped_before = _dropped_logs(pool.proxy)
    log_offset = pool.proxy.log_path.stat().st_size
    answers = asyncio.run(_crowd(f"{pool.proxy.url('public')}/v1/orders", CROWD, CROWD_ROUNDS))
    statuses = Counter(answer.status for answer in answers)
    assert set(statuses) == {202, 503}, statuses
    # 1,500 shoppers queue far past the tarpit's bound per gateway, so part of the
    # crowd was shed up front, and haproxy's own log says each of those was held the
    # tarpit's time before its 503 (a plain deny would log state PR and no wait).
    # haproxy drops a log line rather than wait for another thread's write, and
    # counts the drops: every tarpitted request is a logged line or a dropped one.
    tarpitted = _shed_by_tarpit(pool.proxy) - tarpitted_before

    def tarpit_waits() -> list[int]:
        with pool.proxy.log_path.open("rb") as log:
            log.seek(log_offset)
            return _tarpit_waits_ms(log.read().decode(errors="replace"))

    def logged_and_dropped() -> tuple[int, float]:
        return len(tarpit_waits()), _dropped_logs(pool.proxy) - dropped_before

    def every_tarpit_accounted_for() -> bool:
        logged, dropped = logged_and_dropped()
        return logged <= tarpitted <= logged + dropped

    assert tarpitted > 0, statuses
    assert wait_until(every_tarpit_accounted_for, 10), (tarpitted, logged_and_dropped(), statuses)
    assert tarpit_waits() and min(tarpit_waits()) >= _tarpit_ms(), tarpit_waits()[:20]
    assert statuses[503] >= tarpitted, statuses
    # The crowd's client connections do not become gateway connections: the proxy
    # keeps reusing the `maxconn` it opened per gateway. (Without its fd ratios it
    # dropped the pool past a fifth of its descriptors and opened one per order that
    # left the queue: about as many as the 202s.)
    opened = _gateway_connections_opened(pool.proxy) - opened_before
    bound = 2 * _gateway_maxconn() + REOPENED_SLACK  # two gateways
    assert opened <= bound, (opened, statuses)
    assert statuses[202] > 2 * bound, statuses
    retry_after = Counter(answer.retry_after for answer in answers if answer.status == 503)
    assert set(retry_after) <= {"1", "2", "3"}, retry_after
    for answer in answers:
        if answer.status == 503:
            error = json.loads(answer.body)
            assert error["error"] == "unavailable", error
            assert "retry after" in error["message"], error


def test_a_gateway_stopped_mid_load_loses_no_order(pool: Pool) -> None:
    def stop_flaky() -> None:
        pool.flaky.process.send(signal.SIGTERM)

    url = f"{pool.proxy.url('public')}/v1/orders"
    outcomes = asyncio.run(_send_orders(url, LOAD_ORDERS, after=(LOAD_ORDERS // 3, stop_flaky)))
    assert pool.flaky.process.wait(30) == 0, pool.flaky.process.log_tail(40)
    failures = {outcome for outcome in outcomes if outcome != "202"}
    assert not failures, f"{len([o for o in outcomes if o != '202'])} orders failed: {failures}"
    assert len(outcomes) == LOAD_ORDERS

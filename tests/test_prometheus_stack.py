"""Debian's Prometheus with the shipped rules, scraping a real gateway beside a real drain.

A consumer, a backend and a gateway run as processes on the session's Kafka and
Redis; Prometheus scrapes the gateway every half second and evaluates
deploy/compose/prometheus/alerts.yml as shipped. The gateway is told the topic
keeps orders for 3 s (`FLASHGATE_KAFKA_RETENTION_MS`, its process alone: the topic
itself keeps the default), so a pause of 2 s with a backlog crosses the alert's
line at 2/3 of the retention; the rule's own `for: 1m` is waited out for real.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from flashgate.stack.kafka_broker import KafkaBroker
from flashgate.stack.redis_server import RedisServer
from tests.gateway_client import OPEN_RATES, new_env
from tests.prometheus_support import alerts, api, running_prometheus
from tests.services import (
    ServiceEnv,
    Services,
    admin_json,
    http_json,
    load_sale,
    wait_drain_paused,
    wait_until,
)

pytestmark = pytest.mark.e2e

ALERT = "FlashgateBacklogOutlivesRetention"
RETENTION_MS = 3_000
SCRAPE_S = 0.5
BACKLOG = 20
# The rule holds for 1 minute before it fires; a few evaluations of slack after that.
FIRING_DEADLINE_S = 100.0


@dataclass
class Stack:
    env: ServiceEnv
    prometheus: str


@pytest.fixture(scope="module")
def stack(
    kafka_broker: KafkaBroker,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("prometheus-stack")
    env = new_env(kafka_broker, redis_server, root)
    services = Services(env)
    try:
        services.start_backend()
        services.start_consumer()
        services.start_gateway(FLASHGATE_KAFKA_RETENTION_MS=str(RETENTION_MS))
        target = env.gateway_url.removeprefix("http://")
        with running_prometheus(root / "prometheus", [target], interval_s=SCRAPE_S) as url:
            yield Stack(env, url)
    finally:
        services.stop_all()
        client = redis.Redis.from_url(redis_server.url)
        try:
            client.flushdb()
        finally:
            client.close()


def _value(stack: Stack, query: str) -> float | None:
    """The single value of an instant query, or None while it has no sample."""
    result: list[dict[str, Any]] = api(
        stack.prometheus, f"/api/v1/query?query={urllib.parse.quote(query)}"
    )["result"]
    return float(result[0]["value"][1]) if result else None


def _drain_alerts(stack: Stack) -> list[dict[str, Any]]:
    group = stack.env.variables["FLASHGATE_DRAIN_GROUP_ID"]
    return [
        alert
        for alert in alerts(stack.prometheus)
        if alert["labels"]["alertname"] == ALERT and alert["labels"].get("group") == group
    ]


def test_prometheus_scrapes_the_gateway_and_the_drain_state(stack: Stack) -> None:
    group = stack.env.variables["FLASHGATE_DRAIN_GROUP_ID"]

    def consumer_seen() -> bool:
        return (_value(stack, f'flashgate_drain_consumers{{group="{group}"}}') or 0) >= 1

    assert wait_until(consumer_seen, timeout_s=30), "no drain state scraped"
    assert _value(stack, "flashgate_gateway_ready") == 1
    retention = _value(stack, f'flashgate_drain_retention_seconds{{group="{group}"}}')
    assert retention == RETENTION_MS / 1000
    rules = api(stack.prometheus, "/api/v1/rules")["groups"]
    assert [group["name"] for group in rules] == ["flashgate"]
    assert all(rule["health"] == "ok" for rule in rules[0]["rules"]), rules
    # Running with nothing waiting: the backlog alert has nothing to say.
    assert _drain_alerts(stack) == []


@pytest.mark.timeout(FIRING_DEADLINE_S + 60)
def test_a_paused_drain_with_a_backlog_fires_the_retention_alert(stack: Stack) -> None:
    env = stack.env
    group = env.variables["FLASHGATE_DRAIN_GROUP_ID"]
    # "accept": a 3 s retention is far under buffer_safety_s; this test is about the alert.
    sale = {"stock": {"A": BACKLOG}, "rates": OPEN_RATES, "on_backlog_full": "accept"}
    load_sale(env, "s", sale)
    admin_json(env, "PUT", "/admin/v1/drain", {"paused": True})
    assert wait_drain_paused(env)
    for i in range(BACKLOG):
        order = {"sale_id": "s", "sku": "A", "quantity": 1, "user_id": f"u{i}"}
        assert http_json("POST", f"{env.gateway_url}/v1/orders", order)["status"] == "accepted"

    def backlog_seen() -> bool:
        return (_value(stack, f'flashgate_drain_backlog_orders{{group="{group}"}}') or 0) >= BACKLOG

    assert wait_until(backlog_seen, timeout_s=20), "the backlog never reached Prometheus"
    paused_since = time.monotonic()

    def firing() -> bool:
        return any(alert["state"] == "firing" for alert in _drain_alerts(stack))

    assert wait_until(firing, timeout_s=FIRING_DEADLINE_S, interval_s=1.0), _drain_alerts(stack)
    # Not before the rule's `for: 1m`: the alert waited out its own hold.
    assert time.monotonic() - paused_since >= 55
    alert = _drain_alerts(stack)[0]
    assert alert["labels"]["severity"] == "page"
    assert "past 2/3 of the topic's retention" in alert["annotations"]["summary"]

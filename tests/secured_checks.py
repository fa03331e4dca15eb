"""Checks shared by the secured-Kafka test modules: an order path that works end to end,
dead letters and their replay, and a refused connection that is clear (one log line,
/readyz names Kafka and the cause, orders answered 503 `unavailable` with nothing
reserved, a consumer that waits)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from flashgate.dlq import list_dead_letters
from tests.gateway_client import OPEN_RATES, Client
from tests.services import ServiceEnv, Services, admin_json, http_json, load_sale, wait_until

REFUSED_LINE = "Kafka refuses the connection"


def orders_reach_the_backend(services: Services, count: int) -> list[str]:
    """POST `count` orders through a started gateway; each 202 (after the ack) is delivered
    to the backend once. Returns the order ids."""
    env = services.env
    sale_id = f"sale-{uuid.uuid4().hex[:8]}"
    load_sale(env, sale_id, {"stock": {"A": count}, "rates": OPEN_RATES})

    async def post() -> list[Any]:
        async with Client(env.gateway_url) as client:
            return await asyncio.gather(
                *(client.order(sale_id=sale_id, user_id=f"u{i}") for i in range(count))
            )

    answers = asyncio.run(post())
    assert [a.status for a in answers] == [202] * count, [a.body for a in answers]
    order_ids = [str(a.body["order_id"]) for a in answers]

    def stored() -> bool:
        return int(http_json("GET", f"{env.backend_url}/stats")["orders"]) >= count

    assert wait_until(stored, timeout_s=60), http_json("GET", f"{env.backend_url}/stats")
    stats = http_json("GET", f"{env.backend_url}/stats")
    assert (stats["orders"], stats["duplicates"]) == (count, 0)
    for order_id in order_ids:
        assert http_json("GET", f"{env.backend_url}/orders/{order_id}")["order_id"] == order_id
    return order_ids


def readiness(gateway_url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"{gateway_url}/readyz", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def refused_clearly(services: Services, expected_cause: str) -> None:
    """Gateway and consumer (already started with a connection Kafka refuses) fail clearly."""
    env = services.env
    gateway, consumer = services.running[-2:]

    def named() -> bool:
        status, body = readiness(env.gateway_url)
        return status == 503 and expected_cause in body.get("causes", {}).get("kafka", "")

    assert wait_until(named, timeout_s=30), readiness(env.gateway_url)
    assert consumer.pid is not None
    started, cpu_before = time.monotonic(), _cpu_s(consumer.pid)
    _, body = readiness(env.gateway_url)
    assert body["checks"] == {"kafka": False, "redis": True}

    sale_id = f"sale-{uuid.uuid4().hex[:8]}"
    load_sale(env, sale_id, {"stock": {"A": 5}, "rates": OPEN_RATES})

    async def post() -> list[Any]:
        async with Client(env.gateway_url) as client:
            return [await client.order(sale_id=sale_id, user_id=f"u{i}") for i in range(3)]

    for answer in asyncio.run(post()):
        assert answer.status == 503, answer.body
        assert answer.body["error"] == "unavailable"
        assert int(answer.headers["Retry-After"]) >= 1
    report = admin_json(env, "GET", f"/admin/v1/sales/{sale_id}")
    assert report["skus"] == {"A": {"loaded": 5, "remaining": 5, "reserved": 0, "accepted": 0}}

    def consumer_said_it() -> bool:
        return REFUSED_LINE in consumer.log_path.read_text()

    assert wait_until(consumer_said_it, timeout_s=30), consumer.log_tail(20)
    # A consumer that spins on the refusal burns a core; one that waits, next to nothing.
    spent, elapsed = _cpu_s(consumer.pid) - cpu_before, time.monotonic() - started
    assert spent < 0.2 + 0.25 * elapsed, f"consumer used {spent:.2f} s of CPU in {elapsed:.1f} s"
    # Seconds of retries by now (each answer above waited on Kafka's refusal): still one line.
    for process in (gateway, consumer):
        text = process.log_path.read_text()
        assert text.count(REFUSED_LINE) == 1, text[-3000:]
        assert expected_cause in text
        assert "Traceback" not in text, text[-3000:]
        assert process.running(), f"{process.name} exited: {process.log_tail(20)}"


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dead_letters_and_replay(services: Services) -> None:
    """Orders delivered; orders the backend refuses for good dead-lettered; `flashgate dlq
    replay` puts them back and they are delivered: every Kafka client of the drain and the
    CLI (consumer, DLQ producer, DLQ reader, replay producer) over the secured listener."""
    env = services.env
    # The backend answers 422 to orders marked "refuse-me": refused for good, so each of
    # those is dead-lettered (a refusal of *every* order would hold the drain instead).
    backend = services.start_backend("--reject-attribute", "refuse-me")
    drain = services.start_consumer()
    services.start_gateway()
    orders_reach_the_backend(services, 10)
    sale_id = f"sale-{uuid.uuid4().hex[:8]}"
    load_sale(env, sale_id, {"stock": {"A": 3}, "rates": OPEN_RATES})

    async def post() -> list[str]:
        async with Client(env.gateway_url) as client:
            answers = [
                await client.order(sale_id=sale_id, user_id=f"d{i}", attributes={"refuse-me": "1"})
                for i in range(3)
            ]
        assert [a.status for a in answers] == [202] * 3
        return [str(a.body["order_id"]) for a in answers]

    order_ids = asyncio.run(post())
    settings = env.settings
    assert wait_until(lambda: len(list_dead_letters(settings)) >= 3, 30, interval_s=0.5)
    assert {letter.order_id for letter in list_dead_letters(settings)} == set(order_ids)
    drain.stop(timeout_s=20)
    # The backend takes them now (its refusal was fixed): the replay delivers them.
    backend.stop(timeout_s=20)
    services.start_backend()
    services.start_consumer()
    assert "replayed 3 dead letters" in flashgate_cli(env, "dlq", "replay")

    def delivered() -> bool:
        return int(http_json("GET", f"{env.backend_url}/stats")["orders"]) >= 13

    assert wait_until(delivered, timeout_s=30)
    for order_id in order_ids:
        assert http_json("GET", f"{env.backend_url}/orders/{order_id}")["order_id"] == order_id


def flashgate_cli(env: ServiceEnv, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "flashgate", *args],
        env=env.process_env(), capture_output=True, text=True, timeout=60, cwd=os.getcwd(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout

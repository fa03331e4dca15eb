"""The fault suite's tools: a retrying storefront, and reconciling 202s against the backend.

A shopper here behaves like a real storefront: it sends each order with an
`Idempotency-Key` and retries with the same key on 429/503 or a lost answer, so
an order may be retried through any fault without ever being bought twice.
Reconciliation reads the backend's SQLite file and the dead-letter topic:
- lost: a 202 whose order is neither stored nor dead-lettered (must be 0);
- stored twice: one shopper's purchase stored under two order ids (must be 0).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from confluent_kafka import Consumer, KafkaException, TopicPartition

RETRYABLE = {0, 429, 500, 502, 503, 504}
MAX_ATTEMPTS = 60
REQUEST_TIMEOUT_S = 15.0


@dataclass
class BurstLog:
    accepted: dict[str, str] = field(default_factory=dict)  # user_id -> order_id
    refused: dict[str, int] = field(default_factory=dict)  # user_id -> last status
    attempts: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    started_at: float = 0.0
    finished_at: float = 0.0


async def _shop(
    gateway_url: str, count: int, sale_id: str, connections: int, log: BurstLog, skus: int
) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def shopper() -> None:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                user = f"shopper-{i}-{uuid.uuid4().hex[:6]}"
                body = json.dumps(
                    {"sale_id": sale_id, "sku": f"SKU-{i % skus}", "quantity": 1, "user_id": user}
                ).encode()
                headers = {"Content-Type": "application/json", "Idempotency-Key": uuid.uuid4().hex}
                status = 0
                for attempt in range(MAX_ATTEMPTS):
                    log.attempts += 1
                    retry_after = 0.2
                    try:
                        async with session.post(
                            f"{gateway_url}/v1/orders", data=body, headers=headers
                        ) as response:
                            status = response.status
                            payload = await response.read()
                            if status == 202:
                                log.accepted[user] = json.loads(payload)["order_id"]
                            retry_after = float(response.headers.get("Retry-After", "0.2"))
                    except (TimeoutError, aiohttp.ClientError, ValueError):
                        status = 0
                    log.statuses[status] = log.statuses.get(status, 0) + 1
                    if status not in RETRYABLE:
                        break
                    await asyncio.sleep(min(2.0, max(0.1, retry_after)) * (1 + attempt / 20))
                if status != 202:
                    log.refused[user] = status

        await asyncio.gather(*(shopper() for _ in range(connections)))


def start_burst(
    gateway_url: str,
    count: int,
    *,
    sale_id: str = "chaos",
    connections: int = 64,
    skus: int = 4,
) -> tuple[threading.Thread, BurstLog]:
    """Run the burst in a thread, so the test can inject a fault while it runs."""
    log = BurstLog(started_at=time.time())

    def run() -> None:
        asyncio.run(_shop(gateway_url, count, sale_id, connections, log, skus))
        log.finished_at = time.time()

    thread = threading.Thread(target=run, name="chaos-burst", daemon=True)
    thread.start()
    return thread, log


def wait_accepted(log: BurstLog, at_least: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if len(log.accepted) >= at_least:
            return True
        time.sleep(0.05)
    return False


def backend_rows(db_path: Path) -> list[tuple[str, str]]:
    """(order_id, user_id) of every order the backend stored."""
    connection = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        rows = connection.execute("SELECT order_id, body FROM orders").fetchall()
    finally:
        connection.close()
    result = []
    for order_id, body in rows:
        try:
            user = json.loads(body).get("user_id", "")
        except ValueError:
            user = ""
        result.append((str(order_id), str(user)))
    return result


def dead_lettered(bootstrap: str, topic: str, timeout_s: float = 10.0) -> dict[str, str]:
    """order_id -> reason for every record on the dead-letter topic."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"chaos-dlq-reader-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "log_level": 0,
        }
    )
    found: dict[str, str] = {}
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if metadata is None or not metadata.partitions:
            return found
        partitions = []
        for partition in metadata.partitions:
            _, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout_s
            )
            if high > 0:
                partitions.append(TopicPartition(topic, partition, 0))
        if not partitions:
            return found
        consumer.assign(partitions)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            messages = consumer.consume(500, 0.5)
            if not messages:
                break
            for message in messages:
                if message.error() is not None:
                    continue
                try:
                    order_id = json.loads(message.value() or b"{}").get("order_id", "?")
                except ValueError:
                    order_id = "?"
                reason = dict(message.headers() or []).get("dlq.reason", b"")
                found[order_id] = reason.decode() if isinstance(reason, bytes) else str(reason)
    except KafkaException:
        return found
    finally:
        consumer.close()
    return found


@dataclass
class Reconciliation:
    scenario: str
    accepted: int
    stored: int
    dead_lettered: int
    lost: int
    stored_twice: int
    refused: int
    attempts: int
    recover_s: float | None
    statuses: dict[int, int]

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def reconcile(
    scenario: str,
    log: BurstLog,
    db_path: Path,
    bootstrap: str,
    dlq_topic: str,
    fault_at: float | None,
    timeout_s: float = 120.0,
) -> Reconciliation:
    """Wait (bounded) until every 202 is stored or dead-lettered, then count."""
    wanted = set(log.accepted.values())
    deadline = time.monotonic() + timeout_s
    recovered_at: float | None = None
    rows: list[tuple[str, str]] = []
    while True:
        rows = backend_rows(db_path) if db_path.exists() else []
        stored_ids = {order_id for order_id, _ in rows}
        if wanted <= stored_ids:
            recovered_at = time.time()
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    stored_ids = {order_id for order_id, _ in rows}
    dlq = dead_lettered(bootstrap, dlq_topic) if not wanted <= stored_ids else {}
    per_user: dict[str, int] = {}
    for _, user in rows:
        per_user[user] = per_user.get(user, 0) + 1
    return Reconciliation(
        scenario=scenario,
        accepted=len(wanted),
        stored=len(wanted & stored_ids),
        dead_lettered=len(wanted & set(dlq)),
        lost=len(wanted - stored_ids - set(dlq)),
        stored_twice=sum(1 for n in per_user.values() if n > 1),
        refused=len(log.refused),
        attempts=log.attempts,
        recover_s=(recovered_at - fault_at) if recovered_at and fault_at else None,
        statuses=dict(sorted(log.statuses.items())),
    )


def record(result: Reconciliation, path: Path) -> None:
    """Append one scenario's figures to the suite's results file (JSON lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        out.write(json.dumps(result.as_dict()) + "\n")

"""The fault suite's tools: storefront shoppers, and reconciling answers against the backend.

A shopper sends each order with an `Idempotency-Key`. The retrying storefront
retries with the same key on 429/503 (`outcome_unknown` included) or a lost
answer, so an order may be retried through any fault without ever being bought
twice; the giving-up storefront takes the first answer as final (an
`outcome_unknown` order is then followed through its status, as a storefront
polling `status_url` would, never POSTed again).

Reconciliation reads the backend's SQLite file, the dead-letter topic and the
status of every order answered `outcome_unknown`, and counts against what each
shopper was told:
- placed: answered 202, or `outcome_unknown` and settled accepted;
- lost: a placed order neither stored nor dead-lettered (must be 0);
- stored twice: one shopper's purchase stored under two order ids (must be 0);
- oversold: units stored per SKU beyond its stock, summed (must be 0);
- ghost: a stored order whose shopper was told it failed, i.e. its last
  answer was neither 202 nor `outcome_unknown`, or it was `outcome_unknown`
  and settled `not_stored` (must be 0).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from confluent_kafka import Consumer, KafkaException, TopicPartition

RETRYABLE = {0, 429, 500, 502, 503, 504}
MAX_ATTEMPTS = 60
REQUEST_TIMEOUT_S = 15.0
OUTCOME_UNKNOWN = "outcome_unknown"
NOT_STORED = "not_stored"
FENCED_REASON = "late_record_after_release"
# Statuses an order answered outcome_unknown can settle to and stay placed:
# `failed` here is the drain's word on a placed order (dead-lettered), counted there.
SETTLED_PLACED = frozenset({"accepted", "delivered", "failed"})

StatusRead = tuple[str | None, str | None]  # (status, reason); (None, None): not readable


@dataclass(frozen=True, slots=True)
class Final:
    """The last answer a shopper got for its order: what it was told."""

    status: int  # 0: no answer
    error: str | None = None
    order_id: str | None = None

    @property
    def unknown(self) -> bool:
        return self.error == OUTCOME_UNKNOWN


@dataclass
class BurstLog:
    accepted: dict[str, str] = field(default_factory=dict)  # user_id -> order_id (a 202)
    refused: dict[str, int] = field(default_factory=dict)  # user_id -> last status, not 202
    final: dict[str, Final] = field(default_factory=dict)  # user_id -> last answer
    # order_id -> user_id of every order answered outcome_unknown at least once.
    unknown: dict[str, str] = field(default_factory=dict)
    # order_id -> "accepted" / "not_stored", where a later answer to the same key showed
    # how an unknown outcome settled (retrying shoppers only).
    unknown_settled: dict[str, str] = field(default_factory=dict)
    unknown_answers: int = 0
    orders: int = 0
    attempts: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    started_at: float = 0.0
    finished_at: float = 0.0


def _settled_by_answer(status: int, replayed: bool, order_id: object, unknown_id: str) -> str:
    """How an unknown outcome settled, from the first decisive answer to a retry of its key.

    While the order is pending the retry gets the same 503; once its record was found,
    a 202 replay of the same order; once it was settled not_stored, the retry is
    admitted afresh (a 202 that is no replay, or a 4xx such as sold_out)."""
    found = status == 202 and replayed and order_id == unknown_id
    return "accepted" if found else NOT_STORED


async def _shop(
    gateway_url: str,
    count: int,
    sale_id: str,
    connections: int,
    log: BurstLog,
    skus: int,
    attempts: int,
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
                final = Final(0)
                unknown_id: str | None = None
                for attempt in range(attempts):
                    log.attempts += 1
                    retry_after = 0.2
                    replayed = False
                    answer: dict[str, Any] = {}
                    try:
                        async with session.post(
                            f"{gateway_url}/v1/orders", data=body, headers=headers
                        ) as response:
                            status = response.status
                            payload = await response.read()
                            replayed = response.headers.get("Idempotent-Replayed") == "true"
                            retry_after = float(response.headers.get("Retry-After", "0.2"))
                        try:
                            answer = json.loads(payload)
                        except ValueError:
                            answer = {}
                    except (TimeoutError, aiohttp.ClientError, ValueError):
                        status = 0
                    log.statuses[status] = log.statuses.get(status, 0) + 1
                    order_id = answer.get("order_id")
                    final = Final(
                        status,
                        None if status == 202 else answer.get("error"),
                        None if order_id is None else str(order_id),
                    )
                    if status == 202:
                        log.accepted[user] = str(order_id)
                    if final.unknown and final.order_id:
                        unknown_id = final.order_id
                        log.unknown[unknown_id] = user
                        log.unknown_answers += 1
                    elif (
                        unknown_id is not None
                        and unknown_id not in log.unknown_settled
                        and (status == 202 or 400 <= status < 500)
                    ):
                        # 503s and lost answers say nothing about the settling; these do.
                        log.unknown_settled[unknown_id] = _settled_by_answer(
                            status, replayed, order_id, unknown_id
                        )
                    if status not in RETRYABLE or attempt + 1 == attempts:
                        break
                    await asyncio.sleep(min(2.0, max(0.1, retry_after)) * (1 + attempt / 20))
                log.final[user] = final
                if final.status != 202:
                    log.refused[user] = final.status

        await asyncio.gather(*(shopper() for _ in range(connections)))


def start_burst(
    gateway_url: str,
    count: int,
    *,
    sale_id: str = "chaos",
    connections: int = 64,
    skus: int = 4,
    give_up: bool = False,
) -> tuple[threading.Thread, BurstLog]:
    """Run the burst in a thread, so the test can inject a fault while it runs.

    `give_up`: each shopper sends its order once and takes the answer as final."""
    log = BurstLog(started_at=time.time(), orders=count)
    attempts = 1 if give_up else MAX_ATTEMPTS

    def run() -> None:
        asyncio.run(_shop(gateway_url, count, sale_id, connections, log, skus, attempts))
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


@dataclass(frozen=True, slots=True)
class StoredOrder:
    order_id: str
    user_id: str
    sku: str
    quantity: int


def backend_orders(db_path: Path) -> list[StoredOrder]:
    """Every order the backend stored."""
    connection = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        rows = connection.execute("SELECT order_id, body FROM orders").fetchall()
    finally:
        connection.close()
    result = []
    for order_id, body in rows:
        try:
            fields = json.loads(body)
        except ValueError:
            fields = {}
        result.append(
            StoredOrder(
                str(order_id),
                str(fields.get("user_id", "")),
                str(fields.get("sku", "")),
                int(fields.get("quantity", 1)),
            )
        )
    return result


def backend_rows(db_path: Path) -> list[tuple[str, str]]:
    """(order_id, user_id) of every order the backend stored."""
    return [(order.order_id, order.user_id) for order in backend_orders(db_path)]


def order_statuses(gateway_url: str, order_ids: Collection[str]) -> dict[str, StatusRead]:
    """(status, reason) of each order from `GET /v1/orders/{id}`, as a storefront reads it."""

    async def read() -> dict[str, StatusRead]:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        connector = aiohttp.TCPConnector(limit=16)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def one(order_id: str) -> tuple[str, StatusRead]:
                try:
                    async with session.get(f"{gateway_url}/v1/orders/{order_id}") as response:
                        if response.status != 200:
                            return order_id, (None, None)
                        body = json.loads(await response.read())
                except (TimeoutError, aiohttp.ClientError, ValueError):
                    return order_id, (None, None)
                return order_id, (body.get("status"), body.get("reason"))

            return dict(await asyncio.gather(*(one(o) for o in order_ids)))

    return asyncio.run(read()) if order_ids else {}


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


def drain_caught_up(bootstrap: str, topic: str, group_id: str, timeout_s: float = 10.0) -> bool:
    """True once the drain's committed offsets reach the end of every partition: every
    record Kafka holds (a late one included) was delivered or dead-lettered, so a ghost
    order cannot still be on its way to the backend."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group_id,  # only read: this consumer never joins nor commits
            "enable.auto.commit": False,
            "log_level": 0,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if metadata is None or not metadata.partitions:
            return False
        partitions = [TopicPartition(topic, p) for p in metadata.partitions]
        committed = consumer.committed(partitions, timeout=timeout_s)
        for tp in committed:
            _, high = consumer.get_watermark_offsets(
                TopicPartition(topic, tp.partition), timeout=timeout_s
            )
            if high > 0 and tp.offset < high:  # no commit yet reads as a negative offset
                return False
        return True
    except KafkaException:
        return False
    finally:
        consumer.close()


@dataclass
class Reconciliation:
    scenario: str
    orders: int
    stock: int
    accepted: int  # placed: answered 202, or outcome_unknown settled accepted
    stored: int
    dead_lettered: int
    lost: int
    stored_twice: int
    oversold: int
    ghost: int
    outcome_unknown: int  # orders answered outcome_unknown (at least once)
    unknown_accepted: int
    unknown_not_stored: int
    unknown_unsettled: int  # still pending when the wait ran out (must be 0)
    outcome_unknown_answers: int
    fenced: int  # records dead-lettered as late_record_after_release
    drained: bool  # the drain had consumed every record when the counts were taken
    refused: int  # shoppers not told their order was placed
    attempts: int
    recover_s: float | None
    statuses: dict[int, int]

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def _how_settled(log: BurstLog, order_id: str, statuses: dict[str, StatusRead]) -> str | None:
    """How an unknown outcome settled ("accepted", "not_stored", None while pending):
    from a retry's answer if one showed it, else from the order's status."""
    by_answer = log.unknown_settled.get(order_id)
    if by_answer is not None:
        return by_answer
    status, reason = statuses.get(order_id, (None, None))
    if status == "failed" and reason == NOT_STORED:
        return NOT_STORED
    return "accepted" if status in SETTLED_PLACED else None


def _told(log: BurstLog, final: Final, statuses: dict[str, StatusRead]) -> str | None:
    """What a shopper was told in the end: "placed", "failed", or None (still pending)."""
    if final.status == 202:
        return "placed"
    if final.unknown and final.order_id:
        status, reason = statuses.get(final.order_id, (None, None))
        if status == "failed" and reason == NOT_STORED:
            return "failed"
        return "placed" if status in SETTLED_PLACED else None
    return "failed"


def reconcile(
    scenario: str,
    log: BurstLog,
    db_path: Path,
    bootstrap: str,
    dlq_topic: str,
    fault_at: float | None,
    *,
    gateway_url: str,
    stock: dict[str, int],
    settled: Callable[[], bool] | None = None,
    drained: Callable[[], bool] = lambda: True,
    timeout_s: float = 120.0,
) -> Reconciliation:
    """Wait (bounded) until every unknown outcome is settled (and `settled()` holds),
    every placed order is stored and `drained()` holds, then count."""
    deadline = time.monotonic() + timeout_s
    statuses: dict[str, StatusRead] = {}
    while True:
        # Read every time: a retry that re-placed an order settled not_stored makes it
        # pending again, and the last read is what the counts use.
        statuses = order_statuses(gateway_url, list(log.unknown))
        pending = [o for o in log.unknown if statuses[o][0] in (None, "pending")]
        if not pending and (settled is None or settled()):
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    told = {user: _told(log, final, statuses) for user, final in log.final.items()}
    placed = {
        str(final.order_id)
        for user, final in log.final.items()
        if told[user] == "placed" and final.order_id
    }
    recovered_at: float | None = None
    rows: list[StoredOrder] = []
    caught_up = False
    while True:
        if recovered_at is not None:
            caught_up = drained()  # asked first: the rows read next include all it saw
        rows = backend_orders(db_path) if db_path.exists() else []
        if recovered_at is None and placed <= {row.order_id for row in rows}:
            recovered_at = time.time()
            continue
        if caught_up or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    stored_ids = {row.order_id for row in rows}
    dlq = dead_lettered(bootstrap, dlq_topic)
    per_user: dict[str, int] = {}
    per_sku: dict[str, int] = {}
    for row in rows:
        per_user[row.user_id] = per_user.get(row.user_id, 0) + 1
        per_sku[row.sku] = per_sku.get(row.sku, 0) + row.quantity
    settling = [_how_settled(log, order_id, statuses) for order_id in log.unknown]
    return Reconciliation(
        scenario=scenario,
        orders=log.orders,
        stock=sum(stock.values()),
        accepted=len(placed),
        stored=len(placed & stored_ids),
        dead_lettered=len(placed & set(dlq)),
        lost=len(placed - stored_ids - set(dlq)),
        stored_twice=sum(1 for n in per_user.values() if n > 1),
        oversold=sum(max(0, units - stock.get(sku, 0)) for sku, units in per_sku.items()),
        ghost=sum(1 for row in rows if told.get(row.user_id) == "failed"),
        outcome_unknown=len(log.unknown),
        unknown_accepted=settling.count("accepted"),
        unknown_not_stored=settling.count(NOT_STORED),
        unknown_unsettled=settling.count(None),
        outcome_unknown_answers=log.unknown_answers,
        fenced=sum(1 for reason in dlq.values() if reason == FENCED_REASON),
        drained=caught_up,
        refused=sum(1 for t in told.values() if t != "placed"),
        attempts=log.attempts,
        recover_s=(recovered_at - fault_at) if recovered_at and fault_at else None,
        statuses=dict(sorted(log.statuses.items())),
    )


def record(result: Reconciliation, path: Path) -> None:
    """Append one scenario's figures to the suite's results file (JSON lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        out.write(json.dumps(result.as_dict()) + "\n")

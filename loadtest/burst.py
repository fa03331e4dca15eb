"""A fast asyncio burst generator: send N orders as fast as one process can, record each answer.

Locust saturates a core at ~2,700 req/s on this machine (docs/FACTS.md), so bursts for
the benchmarks come from here: aiohttp, many kept-alive connections, one record
per request (send time, answer time, status) for the per-second plots.

A `503 outcome_unknown` (Kafka's answer for the order was lost, so the gateway
keeps its units until it knows) is handled as a storefront would: the worker
polls the order's `status_url`, waiting the `Retry-After` between reads (capped,
and bounded in number), until it reads accepted/delivered (the order counts as
accepted) or failed (it counts as failed). Only 503s are inspected for it, so
the common 202 costs what it did.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import aiohttp

DEFAULT_CONNECTIONS = 256
REQUEST_TIMEOUT_S = 30.0
OUTCOME_UNKNOWN = "outcome_unknown"
# The gateway writes compact JSON, so a 503 body is searched for this before parsing.
_UNKNOWN_MARK = b'"error":"%s"' % OUTCOME_UNKNOWN.encode()
# Following an unknown outcome: at most this many status reads, this far apart at most
# (the gateway's Retry-After is the reservation TTL plus a reaper round, 35 s by default).
UNKNOWN_POLLS = 20
UNKNOWN_POLL_MAX_S = 5.0


@dataclass(frozen=True, slots=True)
class Answer:
    sent_at: float
    done_at: float
    status: int  # 0: no answer (connection error or timeout)
    order_id: str | None = None
    # Only for a 503 outcome_unknown: what its status settled to ("accepted", "failed",
    # or "unsettled" if the polls ran out first).
    unknown_outcome: str | None = None

    @property
    def latency_s(self) -> float:
        return self.done_at - self.sent_at


@dataclass
class BurstResult:
    started_at: float
    finished_at: float
    answers: list[Answer] = field(default_factory=list)

    @property
    def statuses(self) -> Counter[int]:
        return Counter(a.status for a in self.answers)

    @property
    def accepted_order_ids(self) -> set[str]:
        """Orders answered 202, or outcome_unknown and then read accepted."""
        return {
            a.order_id
            for a in self.answers
            if a.order_id and (a.status == 202 or a.unknown_outcome == "accepted")
        }

    def outcome_unknown(self) -> dict[str, int]:
        """How many answers were outcome_unknown, and what their status settled to."""
        settled = Counter(a.unknown_outcome for a in self.answers if a.unknown_outcome)
        return {
            "answers": sum(settled.values()),
            "accepted": settled["accepted"],
            "failed": settled["failed"],
            "unsettled": settled["unsettled"],
        }

    def share(self, predicate: Callable[[int], bool]) -> float:
        if not self.answers:
            return 0.0
        return sum(1 for a in self.answers if predicate(a.status)) / len(self.answers)

    def latency_quantile(self, q: float, predicate: Callable[[int], bool] = bool) -> float:
        latencies = sorted(a.latency_s for a in self.answers if predicate(a.status))
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    def per_second(
        self, predicate: Callable[[int], bool] = bool, *, sent: bool = False
    ) -> Counter[int]:
        """Answers per unix second (of the answer, or of the send when `sent`)."""
        counts: Counter[int] = Counter()
        for answer in self.answers:
            if predicate(answer.status):
                counts[int(answer.sent_at if sent else answer.done_at)] += 1
        return counts


async def follow_unknown(
    session: aiohttp.ClientSession, status_url: str, retry_after: str | None
) -> str:
    """Poll an outcome_unknown order's status: "accepted", "failed" or "unsettled"."""
    try:
        wait_s = float(retry_after) if retry_after is not None else 1.0
    except ValueError:
        wait_s = 1.0
    wait_s = min(UNKNOWN_POLL_MAX_S, max(0.1, wait_s))
    for _ in range(UNKNOWN_POLLS):
        await asyncio.sleep(wait_s)
        try:
            async with session.get(status_url) as response:
                if response.status != 200:
                    continue
                status = json.loads(await response.read()).get("status")
        except (TimeoutError, aiohttp.ClientError, ValueError):
            continue
        if status in ("accepted", "delivered"):
            return "accepted"
        if status == "failed":
            return "failed"
    return "unsettled"


def order_body(i: int, sale_id: str = "sale-1", skus: int = 4) -> dict[str, object]:
    return {
        "sale_id": sale_id,
        "sku": f"SKU-{i % skus + 1}",
        "quantity": 1,
        "user_id": f"user-{i}",
    }


async def fire(
    url: str,
    count: int,
    *,
    body: Callable[[int], dict[str, object]] = order_body,
    connections: int = DEFAULT_CONNECTIONS,
    headers: dict[str, str] | None = None,
    idempotency_keys: bool = False,
    direct_backend: bool = False,
    offered_rate: float | None = None,
) -> BurstResult:
    """POST `count` orders over `connections` connections, as fast as they are answered.

    With `direct_backend` each body gets an `order_id` and the header
    `Idempotency-Key` (the storefront calling the backend itself, the B3 path).
    With `offered_rate` the load is open-loop: request i leaves at i / rate
    whether or not earlier ones were answered, as shoppers arrive in a spike;
    `connections` then caps how many can be in flight.
    """
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)
    result = BurstResult(started_at=time.time(), finished_at=0.0)
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    base_headers = {"Content-Type": "application/json", **(headers or {})}

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                if offered_rate:
                    delay = result.started_at + i / offered_rate - time.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                payload = body(i)
                request_headers = dict(base_headers)
                if direct_backend:
                    order_id = uuid.uuid4().hex
                    payload = {**payload, "order_id": order_id}
                    request_headers["Idempotency-Key"] = order_id
                elif idempotency_keys:
                    request_headers["Idempotency-Key"] = uuid.uuid4().hex
                data = json.dumps(payload).encode()
                sent = time.time()
                status, order_id_seen = 0, None
                unknown: dict[str, Any] | None = None
                retry_after: str | None = None
                try:
                    async with session.post(url, data=data, headers=request_headers) as response:
                        raw = await response.read()
                        status = response.status
                        if status == 202:
                            order_id_seen = json.loads(raw).get("order_id")
                        elif status == 503 and not direct_backend and _UNKNOWN_MARK in raw:
                            unknown = json.loads(raw)
                            retry_after = response.headers.get("Retry-After")
                except (TimeoutError, aiohttp.ClientError, ValueError):
                    status = 0
                done = time.time()
                if unknown is None:
                    result.answers.append(Answer(sent, done, status, order_id_seen))
                    continue
                outcome = await follow_unknown(
                    session, urljoin(url, str(unknown.get("status_url", ""))), retry_after
                )
                unknown_id = unknown.get("order_id")
                result.answers.append(
                    Answer(
                        sent, done, status, None if unknown_id is None else str(unknown_id), outcome
                    )
                )

        await asyncio.gather(*(worker() for _ in range(connections)))
    result.finished_at = time.time()
    return result

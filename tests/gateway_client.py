"""Test helpers for the gateway: a module-wide gateway process and an aiohttp client.

Every wait is bounded; the gateway is a real process on real Kafka and Redis.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from confluent_kafka import Consumer, TopicPartition

from flashgate.stack.kafka_broker import KafkaBroker
from tests.services import ServiceEnv, Services

ORDER = {"sale_id": "s", "sku": "A", "quantity": 1, "user_id": "u1"}
OPEN_RATES = {
    "sale": {"per_second": 0, "burst": 1},
    "user": {"per_second": 0, "burst": 1},
    "ip": {"per_second": 0, "burst": 1},
}


@dataclass
class Answer:
    status: int
    headers: Mapping[str, str]
    body: Any


class RedisAt(Protocol):
    """A Redis a test started: a server, or a cluster through any of its nodes."""

    @property
    def url(self) -> str: ...


def new_env(
    kafka: KafkaBroker,
    redis: RedisAt,
    root: Path,
    kafka_security: Mapping[str, str] | None = None,
) -> ServiceEnv:
    """Settings for one test; `kafka_security` are FLASHGATE_KAFKA_* variables of a secured
    broker (tests/secured_kafka.py)."""
    suffix = uuid.uuid4().hex[:8]
    env = ServiceEnv.create(
        root,
        bootstrap=kafka.bootstrap,
        redis_url=redis.url,
        orders_topic=f"orders-{suffix}",
        dlq_topic=f"orders-{suffix}.dlq",
        group_id=f"drain-{suffix}",
    )
    env.variables.update(kafka_security or {})
    env.create_topics()
    return env


def running_gateway(env: ServiceEnv, **overrides: str) -> Iterator[Services]:
    services = Services(env)
    try:
        services.start_gateway(**overrides)
        yield services
    finally:
        services.stop_all()


class Client:
    """An aiohttp session against one gateway; `token` is sent as a bearer token."""

    def __init__(self, base_url: str, token: str | None = None, connections: int = 100) -> None:
        self.base_url = base_url
        self.token = token
        self.connections = connections
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.connections),
            timeout=aiohttp.ClientTimeout(total=30),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._session is not None
        await self._session.close()

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        token: str | None = None,
        json_type: bool = True,
    ) -> Answer:
        assert self._session is not None
        sent = dict(headers or {})
        if json_type:
            sent.setdefault("Content-Type", "application/json")
        bearer = token if token is not None else self.token
        if bearer:
            sent.setdefault("Authorization", f"Bearer {bearer}")
        payload = json.dumps(body).encode() if body is not None else data
        async with self._session.request(
            method, self.base_url + path, data=payload, headers=sent
        ) as response:
            raw = await response.read()
            try:
                parsed: Any = json.loads(raw) if raw else None
            except ValueError:
                parsed = raw
            return Answer(response.status, response.headers.copy(), parsed)

    async def order(self, headers: Mapping[str, str] | None = None, **fields: Any) -> Answer:
        return await self.call("POST", "/v1/orders", body={**ORDER, **fields}, headers=headers)


def topic_size(bootstrap: str, topic: str, partitions: int = 6) -> int:
    """How many records the topic holds (sum of high watermarks)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "size-probe", "log_level": 3})
    try:
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        )
    finally:
        consumer.close()

"""The Kafka side of the drain: one confluent-kafka Consumer driven from one thread.

confluent-kafka's Consumer is not safe to call from several threads at once, so
every call goes through a single-thread executor; the event loop never blocks.
Offsets are stored only when the worker says an order is done, and stored
offsets are committed on revocation, so a rebalance redelivers nothing that
was delivered and skips nothing that was not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

log = logging.getLogger(__name__)


class KafkaSource:
    def __init__(self, config: dict[str, Any], topic: str) -> None:
        self._consumer = Consumer(config)
        self._topic = topic
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-consumer")

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def subscribe(self) -> None:
        await self._call(self._subscribe)

    def _subscribe(self) -> None:
        self._consumer.subscribe(
            [self._topic], on_assign=self._on_assign, on_revoke=self._on_revoke
        )

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", sorted(p.partition for p in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Runs inside poll, between batches: everything stored is done, so commit it now
        # rather than leave it to the next owner to deliver again.
        log.info("revoked %s", sorted(p.partition for p in partitions))
        self._commit_stored()

    def _commit_stored(self) -> None:
        try:
            self._consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("commit failed: %s", exc)

    async def poll(self, max_messages: int, timeout_s: float) -> list[Message]:
        messages: list[Message] = await self._call(self._consumer.consume, max_messages, timeout_s)
        good = []
        for message in messages:
            error = message.error()
            if error is None:
                good.append(message)
            elif error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", error)
        return good

    async def store(self, messages: Iterable[Message]) -> None:
        """Mark these messages done: the next commit moves past them."""
        highest: dict[tuple[str, int], int] = {}
        for message in messages:
            key = (message.topic() or "", message.partition() or 0)
            highest[key] = max(highest.get(key, -1), message.offset() or 0)
        offsets = [TopicPartition(t, p, o + 1) for (t, p), o in highest.items()]
        if offsets:
            await self._call(self._store_offsets, offsets)

    def _store_offsets(self, offsets: list[TopicPartition]) -> None:
        try:
            self._consumer.store_offsets(offsets=offsets)
        except KafkaException as exc:
            # The partition was revoked meanwhile; its new owner redelivers (idempotent backend).
            log.warning("could not store offsets %s: %s", offsets, exc)

    async def close(self) -> None:
        await self._call(self._commit_stored)
        await self._call(self._consumer.close)
        self._executor.shutdown(wait=True)

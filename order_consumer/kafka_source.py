"""The Kafka side of the drain: one confluent-kafka Consumer driven from one thread.

confluent-kafka's Consumer is not safe to call from several threads at once, so
every call goes through a single-thread executor and the event loop never
blocks. Rebalance callbacks run on that thread inside `consume()`; they hand
the decision to the worker on the event loop (`RebalanceHandler`) and wait for
it: on revoke the worker lets in-flight deliveries of those partitions finish
(bounded), says which offsets are done, and they are stored and committed
before the partitions go, so the next owner redelivers as little as possible
and skips nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec  # not re-exported for mypy

log = logging.getLogger(__name__)

T = TypeVar("T")
CALLBACK_SLACK_S = 5.0
END_OFFSETS_TIMEOUT_S = 2.0


class RebalanceHandler(Protocol):
    async def partitions_assigned(self, starts: dict[int, int | None]) -> None:
        """New partitions, each with its committed offset (None if none)."""

    async def partitions_revoked(self, partitions: list[int]) -> dict[int, int]:
        """Partitions going away: finish what is in flight; return the offsets to commit."""

    async def partitions_lost(self, partitions: list[int]) -> None:
        """Partitions already owned by someone else: drop them, commit nothing."""


class KafkaSource:
    def __init__(
        self,
        config: dict[str, Any],
        topic: str,
        handler: RebalanceHandler,
        *,
        revoke_timeout_s: float,
    ) -> None:
        self._consumer = Consumer(config)
        self._topic = topic
        self._handler = handler
        self._revoke_timeout_s = revoke_timeout_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-consumer")
        self._loop: asyncio.AbstractEventLoop | None = None
        self.assigned: set[int] = set()
        self.paused: set[int] = set()

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _tp(self, partition: int, offset: int | None = None) -> TopicPartition:
        if offset is None:
            return TopicPartition(self._topic, partition)
        return TopicPartition(self._topic, partition, offset)

    # -- group membership ------------------------------------------------------------

    async def subscribe(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._call(self._subscribe)

    def _subscribe(self) -> None:
        self._consumer.subscribe(
            [self._topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )  # fmt: skip

    def _run_on_loop(self, coro: Any, timeout_s: float) -> Any:
        if self._loop is None:
            raise RuntimeError("KafkaSource.subscribe() was not called")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=timeout_s)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = sorted(p.partition for p in partitions)
        starts: dict[int, int | None] = {p: None for p in numbers}
        try:
            for tp in consumer.committed(partitions, timeout=10):
                starts[tp.partition] = tp.offset if tp.offset >= 0 else None
        except KafkaException as exc:
            log.warning("committed offsets unknown for %s: %s", numbers, exc)
        log.info("assigned %s (committed %s)", numbers, starts)
        self.assigned.update(numbers)
        self._run_on_loop(self._handler.partitions_assigned(starts), CALLBACK_SLACK_S)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = sorted(p.partition for p in partitions)
        log.info("revoked %s: finishing their deliveries", numbers)
        try:
            done = self._run_on_loop(
                self._handler.partitions_revoked(numbers),
                self._revoke_timeout_s + CALLBACK_SLACK_S,
            )
        except Exception as exc:  # the loop is gone or too slow: commit what was stored
            log.warning("revoke of %s: deliveries not settled: %r", numbers, exc)
            done = {}
        self._store_offsets(done)
        self._commit()
        self.assigned.difference_update(numbers)
        self.paused.difference_update(numbers)
        log.info("revoked %s: committed %s", numbers, done)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = sorted(p.partition for p in partitions)
        log.warning("lost %s (no commit possible)", numbers)
        self.assigned.difference_update(numbers)
        self.paused.difference_update(numbers)
        self._run_on_loop(self._handler.partitions_lost(numbers), CALLBACK_SLACK_S)

    # -- records and offsets ----------------------------------------------------------

    async def poll(self, max_messages: int, timeout_s: float) -> list[Message]:
        messages: list[Message] = await self._call(
            self._consumer.consume, max(1, max_messages), timeout_s
        )
        good = []
        for message in messages:
            error = message.error()
            if error is None:
                good.append(message)
            elif error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", error)
        return good

    async def store(self, offsets: dict[int, int]) -> None:
        """Mark everything below these offsets done: the next commit moves past it."""
        if offsets:
            await self._call(self._store_offsets, offsets)

    def _store_offsets(self, offsets: dict[int, int]) -> None:
        if not offsets:
            return
        try:
            self._consumer.store_offsets(offsets=[self._tp(p, o) for p, o in offsets.items()])
        except KafkaException as exc:
            # The partition was revoked meanwhile; its new owner redelivers (idempotent backend).
            log.warning("could not store offsets %s: %s", offsets, exc)

    async def commit(self) -> None:
        await self._call(self._commit)

    def _commit(self) -> None:
        try:
            self._consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("commit failed: %s", exc)

    # -- flow control -----------------------------------------------------------------

    async def pause(self) -> None:
        """Stop fetching every assigned partition; polls still keep us in the group."""
        await self._call(self._pause)

    def _pause(self) -> None:
        todo = sorted(self.assigned - self.paused)
        if todo:
            self._consumer.pause([self._tp(p) for p in todo])
            self.paused.update(todo)

    async def resume(self, positions: dict[int, int]) -> None:
        """Fetch again, from `positions` (pause dropped what was prefetched)."""
        await self._call(self._resume, positions)

    def _resume(self, positions: dict[int, int]) -> None:
        todo = sorted(self.paused & self.assigned)
        self.paused.clear()
        if not todo:
            return
        self._consumer.resume([self._tp(p) for p in todo])
        for partition in todo:
            offset = positions.get(partition)
            if offset is None:
                continue
            try:
                self._consumer.seek(self._tp(partition, offset))
            except KafkaException as exc:
                log.warning("seek of partition %d to %d failed: %s", partition, offset, exc)

    async def close(self) -> None:
        """Leave the group (revoking, so committing, what is assigned) and release the thread."""
        await self._call(self._close)
        self._executor.shutdown(wait=True)

    def _close(self) -> None:
        self._commit()
        self._consumer.close()


class EndOffsets:
    """End offsets of the orders topic, from an admin client of their own.

    Not through the consumer: its one thread spends most of its time inside
    `consume()`, and a broker round trip per partition there, twice a second,
    starved the drain (B4 fell from ~2,500 to ~900 orders/s).
    """

    def __init__(self, config: dict[str, Any], topic: str) -> None:
        self._admin = AdminClient(config)
        self._topic = topic

    async def get(self, partitions: list[int]) -> dict[int, int]:
        if not partitions:
            return {}
        latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        request = {TopicPartition(self._topic, p): latest for p in partitions}
        futures = self._admin.list_offsets(request, request_timeout=END_OFFSETS_TIMEOUT_S)
        results = await asyncio.gather(
            *(asyncio.wrap_future(future) for future in futures.values()), return_exceptions=True
        )
        ends = {}
        for tp, result in zip(futures, results, strict=True):
            if isinstance(result, BaseException):
                log.debug("end offset of %d unknown: %s", tp.partition, result)
            else:
                ends[tp.partition] = int(result.offset)
        return ends

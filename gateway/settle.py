"""After Kafka answers: settle an acknowledged order, or give back a refused one's units.

`follow()` takes over an order the moment it is handed to the producer and
returns a future of its outcome. When the delivery report comes, an
acknowledged order is settled (reservation confirmed, status written,
Idempotency-Key answer stored) together with every order acknowledged with it,
in one round trip, and only then is the outcome resolved, so the 202 goes out
with the status readable. A refused order's units are given back first.

The work is driven by the delivery report, not by the request: a request that
is cancelled (client gone, server stopping) leaves nothing half done. A failed
settle does not undo a 202 (the order is durable in Kafka); it is retried in
the background, because an unconfirmed reservation would go to the reaper.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec

from flashgate.admission.admitter import Admitter, Reservation
from flashgate.admission.batcher import TickBatcher
from flashgate.admission.errors import AdmissionUnavailable
from flashgate.admission.idempotency import Claim, IdempotencyStore
from flashgate.errors import KafkaAckOverdue, KafkaUnavailable
from flashgate.kafka.producer import DeliveredRecord
from flashgate.order_status import OrderStatusStore
from flashgate.redis_scripts.loader import RedisScripts
from flashgate.redis_scripts.wire import RespConnection
from gateway.soldout import SoldOutCache

log = logging.getLogger(__name__)

RETRY_DELAYS_S = (0.2, 1.0, 3.0, 10.0)

Outcome = DeliveredRecord | KafkaUnavailable


class Produced(msgspec.Struct, frozen=True):
    """An order handed to the producer, with what settling or giving it back needs."""

    reservation: Reservation
    accepted_at: float
    # Admission found this order id already holding its reservation (a retry after
    # its gateway died): a record of it may be in Kafka, so it is never released here.
    held: bool = False
    claim: Claim | None = None
    answer: bytes = b""


class Accepted(msgspec.Struct, frozen=True):
    order: Produced
    delivered: DeliveredRecord


class Settler:
    def __init__(
        self,
        scripts: RedisScripts,
        admitter: Admitter,
        statuses: OrderStatusStore,
        idempotency: IdempotencyStore,
        sold_out: SoldOutCache,
        *,
        batching: bool,
        batch_max: int,
        wire: RespConnection | None = None,
        observe_seconds: Callable[[float], None] | None = None,
        observe_ack_seconds: Callable[[float], None] | None = None,
    ) -> None:
        self._scripts = scripts
        self._wire = wire
        self._admitter = admitter
        self._statuses = statuses
        self._idempotency = idempotency
        self._sold_out = sold_out
        self._observe_ack_seconds = observe_ack_seconds
        self._batcher: TickBatcher[Accepted, Outcome] | None = (
            TickBatcher(self._flush, max_batch=batch_max, observe_seconds=observe_seconds)
            if batching
            else None
        )
        self._following: set[asyncio.Future[DeliveredRecord]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._retries: set[asyncio.Task[None]] = set()
        self.late_confirms = 0

    def follow(
        self, produced: asyncio.Future[DeliveredRecord], order: Produced
    ) -> asyncio.Future[Outcome]:
        """The order's outcome once Kafka answered and the bookkeeping is done."""
        outcome: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        sent = time.perf_counter()
        self._following.add(produced)

        def on_report(produced: asyncio.Future[DeliveredRecord]) -> None:
            self._following.discard(produced)
            failure = (
                KafkaUnavailable("the produce was cancelled")
                if produced.cancelled()
                else produced.exception()
            )
            if failure is None:
                if self._observe_ack_seconds is not None:
                    self._observe_ack_seconds(time.perf_counter() - sent)
                self._settle(Accepted(order, produced.result()), outcome)
                return
            if not isinstance(failure, KafkaUnavailable):
                failure = KafkaUnavailable(f"Kafka refused the record: {failure}")
            log.warning("order %s not accepted: %s", _order_id(order), failure)
            self._spawn(self._give_back(order, failure, outcome))

        produced.add_done_callback(on_report)
        return outcome

    async def give_back(self, order: Produced, failure: KafkaUnavailable) -> None:
        """Return the units of an order Kafka did not take, unless a record of it may exist.

        Two cases keep the reservation for the reaper, which returns the units only
        once Kafka is shown not to hold the order: a reservation admission found
        already held (its first attempt's record may have been acknowledged before
        that gateway died), and a missing delivery report (the record's fate is
        unknown).
        """
        reservation = order.reservation
        if order.held or isinstance(failure, KafkaAckOverdue):
            log.warning(
                "reservation %s left to the reaper: its record may be in Kafka", reservation
            )
            return
        try:
            await self._admitter.release([reservation])
        except AdmissionUnavailable as exc:
            log.warning("reservation %s not released (the reaper will): %s", reservation, exc)
        self._sold_out.forget(reservation.sale_id, reservation.sku)

    async def _give_back(
        self, order: Produced, failure: KafkaUnavailable, outcome: asyncio.Future[Outcome]
    ) -> None:
        try:
            await self.give_back(order, failure)
            if outcome.cancelled() and order.claim is not None:
                # Nobody is left to answer: free the Idempotency-Key for the retry now
                # rather than after its lease.
                await self._idempotency.release(order.claim)
        except AdmissionUnavailable as exc:
            log.warning("order %s: giving back stopped short: %s", _order_id(order), exc)
        finally:
            if not outcome.done():
                outcome.set_result(failure)

    def _settle(self, accepted: Accepted, outcome: asyncio.Future[Outcome]) -> None:
        if self._batcher is not None:
            self._batcher.enqueue(accepted, outcome)
        else:
            self._spawn(self._settle_alone(accepted, outcome))

    async def _settle_alone(self, accepted: Accepted, outcome: asyncio.Future[Outcome]) -> None:
        try:
            delivered = (await self._flush([accepted]))[0]
        except BaseException as exc:
            if not outcome.done():
                outcome.set_exception(exc)
            raise
        if not outcome.done():
            outcome.set_result(delivered)

    async def _flush(self, items: list[Accepted]) -> list[DeliveredRecord]:
        try:
            on_time = await self._write(items)
        except AdmissionUnavailable as exc:
            # The orders are in Kafka: they are answered 202 all the same.
            for item in items:
                log.warning("order %s accepted, settling deferred: %s", _id(item), exc)
                self._spawn(self._retry(item), retry=True)
        else:
            for item, in_time in zip(items, on_time, strict=True):
                self._report(item, in_time)
        return [item.delivered for item in items]

    async def _write(self, items: list[Accepted]) -> list[bool]:
        pipe = self._scripts.pipeline(self._wire)
        read = self._admitter.add_confirms(pipe, [item.order.reservation for item in items])
        for item in items:
            order, delivered = item.order, item.delivered
            self._statuses.queue_accepted(
                pipe,
                order.reservation.reservation_id,
                order.accepted_at,
                sale_id=order.reservation.sale_id,
                partition=delivered.partition,
                offset=delivered.offset,
            )
            if order.claim is not None:
                self._idempotency.add_finish(pipe, order.claim, 202, order.answer)
        try:
            results = await pipe.execute()
        except Exception as exc:
            raise AdmissionUnavailable(f"settling failed: {exc}") from exc
        for result in results:
            if isinstance(result, BaseException):
                log.warning("a settling step failed: %s", result)
        return read(results)

    def _report(self, accepted: Accepted, on_time: bool) -> None:
        if not on_time:
            self.late_confirms += 1
            reservation = accepted.order.reservation
            log.error(
                "order %s confirmed after its reservation expired: sale %s SKU %s may be oversold",
                _id(accepted),
                reservation.sale_id,
                reservation.sku,
            )

    async def _retry(self, accepted: Accepted) -> None:
        for delay in RETRY_DELAYS_S:
            await asyncio.sleep(delay)
            try:
                on_time = (await self._write([accepted]))[0]
            except AdmissionUnavailable as exc:
                log.warning("settling order %s failed again: %s", _id(accepted), exc)
                continue
            self._report(accepted, on_time)
            return
        log.error("order %s is in Kafka but its reservation was never confirmed", _id(accepted))

    def _spawn(self, work: Coroutine[Any, Any, None], *, retry: bool = False) -> None:
        task = asyncio.get_running_loop().create_task(work)
        tasks = self._retries if retry else self._tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def aclose(self) -> None:
        """Settle or give back every order still waiting on Kafka (the producer is
        still polling), then stop retrying: the reaper settles what is left."""
        while self._following:
            await asyncio.wait(set(self._following))
            await asyncio.sleep(0)  # let the report callbacks queue their work
        if self._batcher is not None:
            await self._batcher.aclose()
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for task in list(self._retries):
            task.cancel()
        if self._wire is not None:
            await self._wire.close()


def _order_id(order: Produced) -> str:
    return order.reservation.reservation_id


def _id(accepted: Accepted) -> str:
    return _order_id(accepted.order)

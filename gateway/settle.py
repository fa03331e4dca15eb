"""After Kafka answers: settle an acknowledged order, or give back a refused one's units.

`follow()` takes over an order the moment it is handed to the producer and
returns a future of its outcome. When the delivery report comes, an
acknowledged order is settled (reservation confirmed, status written,
Idempotency-Key answer stored) together with every order acknowledged with it,
in one round trip, and only then is the outcome resolved, so the 202 goes out
with the status readable. A refused order's units are given back first.

A failed report is one of two kinds (`flashgate.kafka.delivery_outcome`). A
definite refusal (the record was never written) gives the units back at once.
An unknown outcome (timed out in flight, connection lost, ...) keeps them: the
record may be in Kafka, and releasing would sell the units twice if it is. The
order's status reads `pending`, its Idempotency-Key waits on the outcome, and
the reaper settles it from what Kafka holds; the client is answered
`outcome_unknown`. A retry of an order that its dead gateway left reserved
(`held`) is treated the same way whatever Kafka said: its first record may exist.

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

from flashgate.admission.admitter import Admitter, Confirmation, Reservation
from flashgate.admission.batcher import TickBatcher
from flashgate.admission.errors import AdmissionUnavailable
from flashgate.admission.idempotency import Claim, IdempotencyStore
from flashgate.errors import KafkaOutcomeUnknown, KafkaRefused, KafkaUnavailable
from flashgate.kafka.producer import DeliveredRecord
from flashgate.order_status import OrderStatusStore
from flashgate.redis_client import RedisFailure
from flashgate.redis_scripts.loader import RedisScripts
from gateway.soldout import SoldOutCache

log = logging.getLogger(__name__)

RETRY_DELAYS_S = (0.2, 1.0, 3.0, 10.0)

Outcome = DeliveredRecord | KafkaUnavailable
_FENCED = "the order was settled as not stored before Kafka acknowledged it"


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
        observe_seconds: Callable[[float], None] | None = None,
        observe_ack_seconds: Callable[[float], None] | None = None,
    ) -> None:
        self._scripts = scripts
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
        # Orders Kafka acknowledged after the reaper had settled them "not stored".
        self.fenced = 0

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
                KafkaOutcomeUnknown("the produce was cancelled")
                if produced.cancelled()
                else produced.exception()
            )
            if failure is None:
                if self._observe_ack_seconds is not None:
                    self._observe_ack_seconds(time.perf_counter() - sent)
                self._settle(Accepted(order, produced.result()), outcome)
                return
            if not isinstance(failure, KafkaUnavailable):
                failure = KafkaOutcomeUnknown(f"the produce failed: {failure!r}")
            log.warning("order %s not acknowledged: %s", _order_id(order), failure)
            self._spawn(self._give_back(order, failure, outcome))

        produced.add_done_callback(on_report)
        return outcome

    async def give_back(self, order: Produced, failure: KafkaUnavailable) -> KafkaUnavailable:
        """Return the units of an order Kafka did not take, unless a record of it may exist;
        return the failure as the client must hear it.

        Two cases keep the reservation for the reaper, which returns the units only
        once Kafka is shown not to hold the order: an unknown outcome, and a
        reservation admission found already held (its first attempt's record may
        have been acknowledged before that gateway died). Both are answered
        `outcome_unknown`, with the status `pending` until the reaper settles it.
        """
        reservation = order.reservation
        if order.held and not isinstance(failure, KafkaOutcomeUnknown):
            failure = KafkaOutcomeUnknown(
                f"{failure}; an earlier attempt of this order may be in Kafka"
            )
        if isinstance(failure, KafkaOutcomeUnknown):
            log.warning("order %s left to the reaper: its record may be in Kafka",
                        reservation.reservation_id)  # fmt: skip
            await self._await_outcome(order)
            return failure
        try:
            await self._admitter.release([reservation])
        except AdmissionUnavailable as exc:
            log.warning("reservation %s not released (the reaper will): %s", reservation, exc)
        self._sold_out.forget(reservation.sale_id, reservation.sku)
        return failure

    async def _await_outcome(self, order: Produced) -> None:
        """Status `pending` and the Idempotency-Key waiting on the order's outcome."""
        pipe = self._scripts.pipeline()
        reservation = order.reservation
        self._statuses.queue_unsettled(
            pipe,
            reservation.reservation_id,
            "pending",
            accepted_at=order.accepted_at,
            sale_id=reservation.sale_id,
        )
        if order.claim is not None:
            self._idempotency.add_unknown(pipe, order.claim)
        try:
            results = await pipe.execute()
        except Exception as exc:
            # The reaper still settles the order and writes its status; until then it
            # reads as unknown (404), and a retry of the key waits out its lease.
            log.warning("order %s: pending status not written: %s", reservation.reservation_id,
                        exc)  # fmt: skip
            return
        for result in results:
            if isinstance(result, BaseException):
                log.warning("order %s: a pending write failed: %s",
                            reservation.reservation_id, result)  # fmt: skip

    async def _give_back(
        self, order: Produced, failure: KafkaUnavailable, outcome: asyncio.Future[Outcome]
    ) -> None:
        try:
            failure = await self.give_back(order, failure)
            if (
                outcome.cancelled()
                and order.claim is not None
                and not isinstance(failure, KafkaOutcomeUnknown)
            ):
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

    async def _flush(self, items: list[Accepted]) -> list[Outcome]:
        try:
            confirmations = await self._write(items)
        except AdmissionUnavailable as exc:
            # The orders are in Kafka: they are answered 202 all the same.
            for item in items:
                log.warning("order %s accepted, settling deferred: %s", _id(item), exc)
                self._spawn(self._retry(item), retry=True)
            return [item.delivered for item in items]
        outcomes: list[Outcome] = []
        for item, confirmation in zip(items, confirmations, strict=True):
            if confirmation == "fenced":
                self._spawn(self._undo_fenced(item))
                outcomes.append(KafkaRefused(_FENCED))
            else:
                outcomes.append(item.delivered)
        return outcomes

    async def _write(self, items: list[Accepted]) -> list[Confirmation]:
        pipe = self._scripts.pipeline()
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

    async def _undo_fenced(self, accepted: Accepted) -> None:
        """Kafka acknowledged an order the reaper had already settled "not stored" (the
        ack came after the reaper's look, which needs clocks wrong by more than its
        slack): the drain fences its record, so the order failed. Undo what the settling
        pipeline wrote beside the confirm: the status and the Idempotency-Key's 202."""
        self.fenced += 1
        order = accepted.order
        reservation = order.reservation
        log.error("order %s was acknowledged after it was settled not stored: its record is "
                  "fenced, the order failed", reservation.reservation_id)  # fmt: skip
        try:
            await self._statuses.mark_unsettled(
                [reservation.reservation_id], "not_stored", sale_id=reservation.sale_id
            )
            if order.claim is not None:
                await self._idempotency.release(order.claim)
        except (AdmissionUnavailable, *RedisFailure) as exc:
            log.error("order %s: undoing the fenced order's answer failed: %s",
                      reservation.reservation_id, exc)  # fmt: skip

    async def _retry(self, accepted: Accepted) -> None:
        # A loop, not tenacity: the schedule is a fixed list that starts with a wait
        # (the write just failed), and the answer "fenced" ends it without being an
        # error; in tenacity that takes a pre-sleep, a wait_chain and a result check.
        for delay in RETRY_DELAYS_S:
            await asyncio.sleep(delay)
            try:
                confirmation = (await self._write([accepted]))[0]
            except AdmissionUnavailable as exc:
                log.warning("settling order %s failed again: %s", _id(accepted), exc)
                continue
            if confirmation == "fenced":
                # Answered 202 already; counted so that the impossible is seen if it happens.
                self.fenced += 1
                log.error("order %s was answered 202 but its record is fenced", _id(accepted))
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


def _order_id(order: Produced) -> str:
    return order.reservation.reservation_id


def _id(accepted: Accepted) -> str:
    return _order_id(accepted.order)

"""After Kafka's acknowledgement: confirm the reservation, write the order's status, and
store the Idempotency-Key answer, for all orders acknowledged together in one round trip.

A failure here does not undo a 202 (the order is durable in Kafka); it is
retried in the background until the reservation's deadline, because an
unconfirmed reservation would return its units to stock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from flashgate.admission.admitter import Admitter, Reservation
from flashgate.admission.batcher import TickBatcher
from flashgate.admission.errors import AdmissionUnavailable
from flashgate.admission.idempotency import Claim, IdempotencyStore
from flashgate.order_status import OrderStatusStore
from flashgate.redis_scripts.loader import RedisScripts
from flashgate.redis_scripts.wire import RespConnection

log = logging.getLogger(__name__)

RETRY_DELAYS_S = (0.2, 1.0, 3.0, 10.0)


@dataclass(frozen=True, slots=True)
class Accepted:
    reservation: Reservation
    accepted_at: float
    partition: int
    offset: int
    claim: Claim | None = None
    answer: bytes = b""


class Settler:
    def __init__(
        self,
        scripts: RedisScripts,
        admitter: Admitter,
        statuses: OrderStatusStore,
        idempotency: IdempotencyStore,
        *,
        batching: bool,
        batch_max: int,
        wire: RespConnection | None = None,
        observe_seconds: Callable[[float], None] | None = None,
    ) -> None:
        self._scripts = scripts
        self._wire = wire
        self._admitter = admitter
        self._statuses = statuses
        self._idempotency = idempotency
        self._batcher: TickBatcher[Accepted, bool] | None = (
            TickBatcher(self._flush, max_batch=batch_max, observe_seconds=observe_seconds)
            if batching
            else None
        )
        self._retries: set[asyncio.Task[None]] = set()
        # Requests cancelled mid-produce finish their bookkeeping here (see orders.py).
        self.background: set[asyncio.Task[None]] = set()
        self.late_confirms = 0

    async def settle(self, accepted: Accepted) -> None:
        try:
            if self._batcher is not None:
                on_time = await self._batcher.submit(accepted)
            else:
                on_time = (await self._flush([accepted]))[0]
        except AdmissionUnavailable as exc:
            log.warning("order %s accepted, settling deferred: %s", _id(accepted), exc)
            task = asyncio.get_running_loop().create_task(self._retry(accepted))
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)
            return
        self._report(accepted, on_time)

    def _report(self, accepted: Accepted, on_time: bool) -> None:
        if not on_time:
            self.late_confirms += 1
            log.error(
                "order %s confirmed after its reservation expired: sale %s SKU %s may be oversold",
                _id(accepted),
                accepted.reservation.sale_id,
                accepted.reservation.sku,
            )

    async def _flush(self, items: list[Accepted]) -> list[bool]:
        pipe = self._scripts.pipeline(self._wire)
        read = self._admitter.add_confirms(pipe, [item.reservation for item in items])
        for item in items:
            self._statuses.queue_accepted(
                pipe,
                item.reservation.reservation_id,
                item.accepted_at,
                sale_id=item.reservation.sale_id,
                partition=item.partition,
                offset=item.offset,
            )
            if item.claim is not None:
                self._idempotency.add_finish(pipe, item.claim, 202, item.answer)
        try:
            results = await pipe.execute()
        except Exception as exc:
            raise AdmissionUnavailable(f"settling failed: {exc}") from exc
        for result in results:
            if isinstance(result, BaseException):
                log.warning("a settling step failed: %s", result)
        return read(results)

    async def _retry(self, accepted: Accepted) -> None:
        for delay in RETRY_DELAYS_S:
            await asyncio.sleep(delay)
            try:
                on_time = (await self._flush([accepted]))[0]
            except AdmissionUnavailable as exc:
                log.warning("settling order %s failed again: %s", _id(accepted), exc)
                continue
            self._report(accepted, on_time)
            return
        log.error("order %s is in Kafka but its reservation was never confirmed", _id(accepted))

    async def aclose(self) -> None:
        if self._batcher is not None:
            await self._batcher.aclose()
        if self.background:
            await asyncio.gather(*self.background, return_exceptions=True)
        for task in list(self._retries):
            task.cancel()
        if self._wire is not None:
            await self._wire.close()


def _id(accepted: Accepted) -> str:
    return accepted.reservation.reservation_id

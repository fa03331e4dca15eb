"""Settle reservations nobody settled: their gateway died, or Kafka's answer was unknown.

A reservation past its deadline is either an order that Kafka never took (the
gateway died before the ack, or Kafka refused it and the release was lost) or
one that Kafka did take (the gateway died in the millisecond between the ack
and its confirm, or the ack was lost in a stall: the gateway answered
`outcome_unknown`). Returning the units on a timer alone would sell the second
kind twice, so the reaper looks for the order's record in Kafka first:
found, the reservation is confirmed (as adopted: a retry of it is answered
"accepted") and the status reads `accepted`; proven absent, its units return
to stock (`reap.lua`) and the status reads `failed` / `not_stored`. A record
that a stalled broker still writes after that is fenced by the drain
(confirm.lua), never delivered. While Kafka cannot be read, expired
reservations keep their units: stock is held back, never oversold.

The search window is the reservation's creation time (deadline - TTL) to that
plus the produce timeout, widened by `CLOCK_SLACK_MS` for clock differences
between gateway hosts and Redis; a reservation is looked at only once no
record of it can still arrive. It starts no later than the time in the order id
(a ULID minted before the first produce): a retry that re-admitted the order
renewed its deadline, and the first attempt's record is older than that.
Every gateway replica runs a reaper: confirm and reap are idempotent, so two
reapers agree.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass

from flashgate.admission.admitter import Admitter, Expired, Reservation
from flashgate.admission.errors import AdmissionUnavailable
from flashgate.admission.sales import SaleStore
from flashgate.errors import KafkaUnavailable
from flashgate.ids import order_id_time_ms
from flashgate.kafka.record_finder import find_keys
from flashgate.order_status import OrderStatusStore
from flashgate.redis_client import RedisFailure
from flashgate.settings import KafkaSettings

log = logging.getLogger(__name__)

CLOCK_SLACK_MS = 2_000

KeyFinder = Callable[[Collection[bytes], int, int], set[bytes]]


@dataclass(frozen=True, slots=True)
class ReapReport:
    confirmed: int = 0
    returned: int = 0
    waiting: int = 0  # expired, but a record could still arrive, or Kafka could not be read


class Reaper:
    def __init__(
        self,
        admitter: Admitter,
        sales: SaleStore,
        statuses: OrderStatusStore,
        find: KeyFinder,
        *,
        reservation_ttl_ms: int,
        produce_timeout_ms: int,
        now_ms: Callable[[], float] = lambda: time.time() * 1000,
    ) -> None:
        self._admitter = admitter
        self._sales = sales
        self._statuses = statuses
        self._find = find
        self._ttl_ms = reservation_ttl_ms
        self._produce_timeout_ms = produce_timeout_ms
        self._now_ms = now_ms
        # Statuses of orders settled here that Redis has not taken yet (see _write_statuses).
        self._unwritten: deque[tuple[str, str, str, float]] = deque()

    @classmethod
    def on_kafka(
        cls,
        admitter: Admitter,
        sales: SaleStore,
        statuses: OrderStatusStore,
        kafka: KafkaSettings,
        *,
        reservation_ttl_ms: int,
        produce_timeout_ms: int,
    ) -> Reaper:
        def find(keys: Collection[bytes], start_ms: int, end_ms: int) -> set[bytes]:
            return find_keys(kafka, kafka.orders_topic, keys, start_ms, end_ms)

        return cls(
            admitter,
            sales,
            statuses,
            find,
            reservation_ttl_ms=reservation_ttl_ms,
            produce_timeout_ms=produce_timeout_ms,
        )

    def _window(self, expired: Expired) -> tuple[int, int]:
        created = expired.deadline_ms - self._ttl_ms
        minted = order_id_time_ms(expired.reservation.reservation_id)
        first = created if minted is None else min(created, minted)
        return (
            int(first - CLOCK_SLACK_MS),
            int(created + self._produce_timeout_ms + CLOCK_SLACK_MS),
        )

    async def run_once(self) -> ReapReport:
        await self._write_statuses()
        total = ReapReport()
        for sale_id in await self._sales.sale_ids():
            report = await self.reap_sale(sale_id)
            total = ReapReport(
                total.confirmed + report.confirmed,
                total.returned + report.returned,
                total.waiting + report.waiting,
            )
        return total

    async def reap_sale(self, sale_id: str) -> ReapReport:
        now = self._now_ms()
        expired = await self._admitter.expired(sale_id)
        windows = [(e.reservation, self._window(e)) for e in expired]
        ready = [(r, w) for r, w in windows if w[1] <= now]
        if not ready:
            return ReapReport(waiting=len(expired))
        start = min(w[0] for _, w in ready)
        end = max(w[1] for _, w in ready)
        keys = {r.reservation_id.encode(): r for r, _ in ready}
        try:
            found = await asyncio.to_thread(self._find, list(keys), start, end)
        except KafkaUnavailable as exc:
            log.warning("sale %s: %d expired reservations held: %s", sale_id, len(ready), exc)
            return ReapReport(waiting=len(expired))
        in_kafka = [r for key, r in keys.items() if key in found]
        absent = [r.reservation_id for key, r in keys.items() if key not in found]
        if in_kafka:
            confirmed = await self._admitter.confirm(in_kafka, adopt=True)
            adopted = [r for r, c in zip(in_kafka, confirmed, strict=True) if c == "confirmed"]
            await self._mark_accepted(adopted)
            log.warning(
                "sale %s: %d orders were in Kafka but never confirmed (their gateway died "
                "or Kafka's answer was lost); confirmed now",
                sale_id,
                len(adopted),
            )
        returned = await self._admitter.reap(sale_id, absent)
        if returned:
            await self._mark_not_stored(sale_id, returned)
            log.info(
                "sale %s: %d expired reservations proven absent from Kafka, units returned",
                sale_id,
                len(returned),
            )
        return ReapReport(len(in_kafka), len(returned), len(expired) - len(ready))

    async def _mark_accepted(self, orders: list[Reservation]) -> None:
        for reservation in orders:
            minted = order_id_time_ms(reservation.reservation_id)
            accepted_at = (minted or self._now_ms()) / 1000
            self._unwritten.append((reservation.reservation_id, "accepted", reservation.sale_id,
                                    accepted_at))  # fmt: skip
        await self._write_statuses()

    async def _mark_not_stored(self, sale_id: str, order_ids: list[str]) -> None:
        self._unwritten.extend((order_id, "not_stored", sale_id, 0.0) for order_id in order_ids)
        await self._write_statuses()

    async def _write_statuses(self) -> None:
        """Write the statuses of orders settled here; kept for the next run if Redis fails.

        The settling itself (confirm, reap and its fence) is already done by then:
        only what a shopper reads would lag, so it is retried rather than lost.
        """
        while self._unwritten:
            order_id, status, sale_id, accepted_at = self._unwritten[0]
            try:
                if status == "accepted":
                    await self._statuses.mark_accepted(order_id, accepted_at, sale_id=sale_id)
                else:
                    await self._statuses.mark_unsettled([order_id], "not_stored", sale_id=sale_id)
            except RedisFailure as exc:
                log.warning("%d order statuses not written yet: %s", len(self._unwritten), exc)
                return
            self._unwritten.popleft()


async def reap_forever(reaper: Reaper, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            await reaper.run_once()
        except AdmissionUnavailable as exc:
            log.warning("reaper: %s", exc)

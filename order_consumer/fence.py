"""The fence: before a record is delivered, its order is settled in Redis, once.

A record reaches the drain in one of three states of its order:
- its reservation is still open (the gateway died, or Kafka's answer was
  unknown, and the reaper has not looked yet): the record is proof the order is
  in Kafka, so the drain confirms it here, as the reaper would have; the
  reaper then finds nothing left to return;
- the reaper already proved the record absent and returned the units (a broker
  wrote it after a stall longer than the reaper's window): the order was
  settled `not_stored` and its shopper told so, so the record is *fenced*:
  dead-lettered with reason `late_record_after_release`, never delivered;
- anything else (confirmed by its gateway, or no sale state at all): delivered.

All three are decided by one atomic call (confirm.lua in `adopt` mode), so the
reaper and the drain can never both win: a unit is either kept for the order
that is delivered, or returned for an order that never is. Calls are batched
per event-loop tick, since a poll starts many jobs at once.
"""

from __future__ import annotations

from flashgate.admission.admitter import Admitter, Confirmation, Reservation
from flashgate.admission.batcher import TickBatcher
from flashgate.order import OrderRecord
from flashgate.redis_client import RedisClient
from flashgate.redis_scripts.loader import RedisScripts

FENCED_REASON = "late_record_after_release"
BATCH_MAX = 500


class RecordFence:
    def __init__(self, redis: RedisClient, *, settled_keep_ms: int) -> None:
        # Only confirm.lua is used; the reservation TTL is the gateway's business.
        self._admitter = Admitter(
            RedisScripts(redis, ("confirm",)),
            reservation_ttl_ms=0,
            settled_keep_ms=settled_keep_ms,
            batching=False,
        )
        self._batcher: TickBatcher[Reservation, Confirmation] = TickBatcher(
            self._confirm, max_batch=BATCH_MAX
        )

    async def passes(self, record: OrderRecord) -> bool:
        """True: deliver the record; False: it is fenced. Raises AdmissionUnavailable."""
        reservation = Reservation(
            record.order_id, record.sale_id, record.sku, record.quantity, record.user_id
        )
        return await self._batcher.submit(reservation) != "fenced"

    async def _confirm(self, batch: list[Reservation]) -> list[Confirmation]:
        return await self._admitter.confirm(batch, adopt=True)

    async def aclose(self) -> None:
        await self._batcher.aclose()

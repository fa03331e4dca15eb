"""Return expired reservations of idle sales to stock, every `interval_s`.

Admission itself returns expired reservations of the sale it admits for, so a
busy sale heals without this; the reaper covers sales that get no orders. Every
gateway replica runs one: the script is idempotent and cheap.
"""

from __future__ import annotations

import asyncio
import logging

from flashgate.admission.admitter import Admitter
from flashgate.admission.errors import AdmissionUnavailable
from flashgate.admission.sales import SaleStore

log = logging.getLogger(__name__)


async def reap_forever(admitter: Admitter, sales: SaleStore, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            for sale_id in await sales.sale_ids():
                returned = await admitter.reap(sale_id)
                if returned:
                    log.info(
                        "sale %s: %d expired reservations returned to stock", sale_id, returned
                    )
        except AdmissionUnavailable as exc:
            log.warning("reaper: %s", exc)

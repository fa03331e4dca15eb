"""A local memory of SKUs that reached zero, so a sold-out rush costs no Redis call.

Once admission reports a SKU at zero, later orders for it are answered
`sold_out` here for `ttl_s`. Stock can come back (a released or expired
reservation, a reload), so the memory is short; a reload through the
gateway's admin listener clears it at once (in every worker: gateway.worker_peers).
Units that come back are missed for at most `ttl_s` by this gateway: a
conservative 409, never an oversell.
"""

from __future__ import annotations

import time


class SoldOutCache:
    def __init__(self, ttl_s: float) -> None:
        self._ttl_s = ttl_s
        # (sale, sku) -> (until, the sale's per_order_max), so a too-large quantity
        # still gets its 422 rather than a 409.
        self._until: dict[tuple[str, str], tuple[float, int]] = {}

    @property
    def enabled(self) -> bool:
        return self._ttl_s > 0

    def mark(self, sale_id: str, sku: str, per_order_max: int) -> None:
        if self._ttl_s > 0:
            self._until[(sale_id, sku)] = (time.monotonic() + self._ttl_s, per_order_max)

    def lookup(self, sale_id: str, sku: str) -> int | None:
        """The sale's per_order_max if the SKU is known to be sold out, else None."""
        entry = self._until.get((sale_id, sku))
        if entry is None:
            return None
        if time.monotonic() < entry[0]:
            return entry[1]
        del self._until[(sale_id, sku)]
        return None

    def forget(self, sale_id: str, sku: str | None = None) -> None:
        """Stock came back (released, or the sale reloaded): ask Redis again."""
        if sku is not None:
            self._until.pop((sale_id, sku), None)
            return
        for key in [key for key in self._until if key[0] == sale_id]:
            del self._until[key]

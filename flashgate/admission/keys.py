"""Redis keys of admission, designed for Redis Cluster.

Everything one admission script touches shares the sale's hash tag
`{sale:<sale_id>}`, so it lives in one cluster slot. The per-user and per-IP
limiters are therefore kept per sale (a user's rate in sale A does not count
against sale B). Idempotency keys stand alone: each is its own slot.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

# A set of sale ids that have been loaded, for the reaper and the admin listing.
SALES_INDEX_KEY = "flashgate:sales"


@dataclass(frozen=True, slots=True)
class SaleKeys:
    """The keys of one sale; `core` is the KEYS prefix every admission script takes."""

    sale_id: str
    config: str
    loaded: str
    reserved: str
    accepted: str
    pending: str
    reservations: str
    bought: str
    counters: str
    reaped: str
    adopted: str
    sale_tat: str

    @classmethod
    def of(cls, sale_id: str) -> SaleKeys:
        tag = f"{{sale:{sale_id}}}"
        return cls(
            sale_id=sale_id,
            config=f"{tag}:config",
            loaded=f"{tag}:loaded",
            reserved=f"{tag}:reserved",
            accepted=f"{tag}:accepted",
            pending=f"{tag}:pending",
            reservations=f"{tag}:reservations",
            bought=f"{tag}:bought",
            counters=f"{tag}:counters",
            reaped=f"{tag}:reaped",
            adopted=f"{tag}:adopted",
            # admit.lua names the per-user and per-IP limiters from this key's tag:
            # "<tag>:tat:u:<user>", "<tag>:tat:ip:<ip>".
            sale_tat=f"{tag}:tat:sale",
        )

    @property
    def core(self) -> list[str]:
        return [
            self.config,
            self.loaded,
            self.reserved,
            self.accepted,
            self.pending,
            self.reservations,
            self.bought,
            self.counters,
            self.reaped,
            self.adopted,
        ]


def idempotency_scope(token: str | None) -> str:
    """Who an Idempotency-Key belongs to: a digest of the storefront token, or "anon"."""
    if not token:
        return "anon"
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def idempotency_key(scope: str, key: str) -> str:
    return f"idem:{scope}:{key}"

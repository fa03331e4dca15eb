"""Sales: what `PUT /admin/v1/sales/{sale_id}` loads, and what `GET` reports.

A sale is its limits (per-order and per-user maximum, three GCRA rates), its stock
per SKU and, optionally, its schedule (`opens_at`, `closes_at`; admit.lua judges them
by Redis's clock). Fields a definition leaves out come from the `[sales]` settings.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec

from flashgate.admission.errors import AdmissionUnavailable
from flashgate.admission.keys import SALES_INDEX_KEY, SaleKeys
from flashgate.order import Name
from flashgate.redis_client import RedisClient, RedisFailure, as_text
from flashgate.redis_scripts.loader import RedisScripts
from flashgate.settings import SalesSettings

PER_ORDER_MAX_LIMIT = 1_000  # the order schema's own bound on quantity
SKUS_MAX = 10_000
# A request waits out the window: keep it well inside any client's timeout.
FAIR_START_MAX_MS = 10_000

Units = Annotated[int, msgspec.Meta(ge=0, le=10**12)]
PerSecond = Annotated[float, msgspec.Meta(ge=0, le=10**7)]
Burst = Annotated[int, msgspec.Meta(ge=1, le=10**9)]
# RFC 3339 with an offset: a time without a zone means something else on every machine.
Instant = Annotated[datetime, msgspec.Meta(tz=True)]
SaleState = Literal["scheduled", "open", "closed", "sold_out"]


class RateSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One GCRA limit: `per_second` sustained (0 = no limit), `burst` requests at once."""

    per_second: PerSecond
    burst: Burst


class RatesSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    sale: RateSpec | None = None
    user: RateSpec | None = None
    ip: RateSpec | None = None


class SaleDefinition(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The body of `PUT /admin/v1/sales/{sale_id}`: only `stock` is required."""

    stock: Annotated[dict[Name, Units], msgspec.Meta(min_length=1, max_length=SKUS_MAX)]
    per_order_max: Annotated[int, msgspec.Meta(ge=1, le=PER_ORDER_MAX_LIMIT)] | None = None
    per_user_max: Annotated[int, msgspec.Meta(ge=0, le=10**9)] | None = None
    rates: RatesSpec | None = None
    # The backlog guard (gateway/backlog_guard.py): deliver this sale's orders within this
    # many seconds (on top of the buffer's own limit), and what to do when the projection
    # says they would not be: refuse (503 backlog_full) or accept and let the alerts tell.
    deliver_within_s: Annotated[int, msgspec.Meta(ge=1, le=10**8)] | None = None
    on_backlog_full: Literal["refuse", "accept"] = "refuse"
    # Before opens_at: 409 sale_not_open with Retry-After; from closes_at on: 410.
    opens_at: Instant | None = None
    closes_at: Instant | None = None
    # The orders of the first fair_start_ms after opens_at are admitted by lottery.
    fair_start_ms: Annotated[int, msgspec.Meta(ge=0, le=FAIR_START_MAX_MS)] = 0

    def __post_init__(self) -> None:
        if self.opens_at and self.closes_at and self.closes_at <= self.opens_at:
            raise ValueError("closes_at must be later than opens_at")
        if self.fair_start_ms and self.opens_at is None:
            raise ValueError("fair_start_ms needs opens_at: the window starts at the opening")


def _epoch_ms(instant: datetime | None) -> int:
    return 0 if instant is None else round(instant.timestamp() * 1000)


def rfc3339(epoch_ms: int) -> str:
    """An instant as RFC 3339 in UTC, to the millisecond."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SaleConfig(msgspec.Struct, frozen=True, kw_only=True):
    """A sale's limits with every default resolved; stored flat in Redis."""

    per_order_max: int
    per_user_max: int
    sale_rate: float
    sale_burst: int
    user_rate: float
    user_burst: int
    ip_rate: float
    ip_burst: int
    opens_at_ms: int = 0  # 0: no such bound
    closes_at_ms: int = 0
    fair_start_ms: int = 0
    # Keys the fair start's tickets (a hash of salt and order id): unknown outside Redis,
    # so nobody can tell which order ids would draw well. Made anew by every load.
    lottery_salt: str = ""
    deliver_within_s: int = 0  # 0: only the buffer's own limit
    on_backlog_full: str = "refuse"

    @classmethod
    def resolve(cls, definition: SaleDefinition, defaults: SalesSettings) -> SaleConfig:
        rates = definition.rates or RatesSpec()
        sale = rates.sale or RateSpec(defaults.sale_rate_per_s, defaults.sale_burst)
        user = rates.user or RateSpec(defaults.user_rate_per_s, defaults.user_burst)
        ip = rates.ip or RateSpec(defaults.ip_rate_per_s, defaults.ip_burst)
        return cls(
            per_order_max=(
                definition.per_order_max
                if definition.per_order_max is not None
                else defaults.per_order_max
            ),
            per_user_max=(
                definition.per_user_max
                if definition.per_user_max is not None
                else defaults.per_user_max
            ),
            sale_rate=sale.per_second,
            sale_burst=sale.burst,
            user_rate=user.per_second,
            user_burst=user.burst,
            ip_rate=ip.per_second,
            ip_burst=ip.burst,
            opens_at_ms=_epoch_ms(definition.opens_at),
            closes_at_ms=_epoch_ms(definition.closes_at),
            fair_start_ms=definition.fair_start_ms,
            lottery_salt=secrets.token_hex(16) if definition.fair_start_ms else "",
            deliver_within_s=definition.deliver_within_s or 0,
            on_backlog_full=definition.on_backlog_full,
        )

    def as_rates(self) -> dict[str, dict[str, float | int]]:
        return {
            "sale": {"per_second": self.sale_rate, "burst": self.sale_burst},
            "user": {"per_second": self.user_rate, "burst": self.user_burst},
            "ip": {"per_second": self.ip_rate, "burst": self.ip_burst},
        }


class SkuReport(msgspec.Struct, frozen=True):
    loaded: int
    remaining: int
    reserved: int
    accepted: int


class SaleReport(msgspec.Struct, frozen=True, kw_only=True):
    sale_id: str
    per_order_max: int
    per_user_max: int
    rates: dict[str, dict[str, float | int]]
    skus: dict[str, SkuReport]
    accepted_orders: int
    accepted_units: int
    delivered_orders: int
    pending_reservations: int
    # Records dead-lettered by the drain's fence: written after their order was
    # settled "not stored" (see order_consumer/fence.py).
    fenced_orders: int = 0
    state: SaleState = "open"
    opens_at: str | None = None
    closes_at: str | None = None
    # Until opens_at (scheduled) or closes_at (open), by Redis's clock when reported.
    seconds_to_open: float | None = None
    seconds_to_close: float | None = None
    fair_start_ms: int = 0
    deliver_within_s: int | None = None
    on_backlog_full: str = "refuse"


_encoder = msgspec.json.Encoder()


def _ints(raw: dict[bytes, bytes]) -> dict[str, int]:
    return {as_text(k): int(v) for k, v in raw.items()}


class SaleStore:
    """Load sales into Redis and report on them."""

    def __init__(self, scripts: RedisScripts) -> None:
        self._scripts = scripts
        self._redis: RedisClient = scripts.redis

    async def load(
        self,
        sale_id: str,
        definition: SaleDefinition,
        defaults: SalesSettings,
        *,
        lottery_salt: str | None = None,
    ) -> SaleConfig:
        """Load or reload; `lottery_salt` fixes the fair start's draw (tests, benchmarks)."""
        config = SaleConfig.resolve(definition, defaults)
        if lottery_salt is not None:
            config = msgspec.structs.replace(config, lottery_salt=lottery_salt)
        keys = SaleKeys.of(sale_id)
        try:
            await self._scripts.call(
                "load_sale",
                [keys.config, keys.loaded],
                [_encoder.encode(config), _encoder.encode(definition.stock)],
            )
            await self._redis.sadd(SALES_INDEX_KEY, sale_id)
        except RedisFailure as exc:
            raise AdmissionUnavailable(f"cannot load sale {sale_id}: {exc}") from exc
        return config

    async def sale_ids(self) -> list[str]:
        try:
            return sorted(as_text(m) for m in await self._redis.smembers(SALES_INDEX_KEY))
        except RedisFailure as exc:
            raise AdmissionUnavailable(f"cannot list sales: {exc}") from exc

    async def report(self, sale_id: str) -> SaleReport | None:
        keys = SaleKeys.of(sale_id)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(keys.config)
                pipe.hgetall(keys.loaded)
                pipe.hgetall(keys.reserved)
                pipe.hgetall(keys.accepted)
                pipe.hgetall(keys.counters)
                pipe.zcard(keys.pending)
                (
                    config_raw,
                    loaded_raw,
                    reserved_raw,
                    accepted_raw,
                    counters_raw,
                    pending,
                ) = await pipe.execute()
            seconds, micros = await self._redis.time()
        except RedisFailure as exc:
            raise AdmissionUnavailable(f"cannot read sale {sale_id}: {exc}") from exc
        if not config_raw:
            return None
        fields = {as_text(k): as_text(v) for k, v in config_raw.items()}
        config = SaleConfig(
            per_order_max=int(fields["per_order_max"]),
            per_user_max=int(fields["per_user_max"]),
            sale_rate=float(fields["sale_rate"]),
            sale_burst=int(fields["sale_burst"]),
            user_rate=float(fields["user_rate"]),
            user_burst=int(fields["user_burst"]),
            ip_rate=float(fields["ip_rate"]),
            ip_burst=int(fields["ip_burst"]),
            opens_at_ms=int(fields.get("opens_at_ms", 0)),
            closes_at_ms=int(fields.get("closes_at_ms", 0)),
            fair_start_ms=int(fields.get("fair_start_ms", 0)),
            deliver_within_s=int(fields.get("deliver_within_s", "0")),
            on_backlog_full=fields.get("on_backlog_full", "refuse"),
        )
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        loaded, reserved = _ints(loaded_raw), _ints(reserved_raw)
        accepted, counters = _ints(accepted_raw), _ints(counters_raw)
        skus = {
            sku: SkuReport(
                loaded=units,
                remaining=max(0, units - accepted.get(sku, 0) - reserved.get(sku, 0)),
                reserved=reserved.get(sku, 0),
                accepted=accepted.get(sku, 0),
            )
            for sku, units in sorted(loaded.items())
        }
        return SaleReport(
            sale_id=sale_id,
            per_order_max=config.per_order_max,
            per_user_max=config.per_user_max,
            rates=config.as_rates(),
            skus=skus,
            accepted_orders=counters.get("accepted_orders", 0),
            accepted_units=counters.get("accepted_units", 0),
            delivered_orders=counters.get("delivered_orders", 0),
            fenced_orders=counters.get("fenced_orders", 0),
            pending_reservations=int(pending),
            fair_start_ms=config.fair_start_ms,
            **_schedule(config, skus, now_ms),
            deliver_within_s=config.deliver_within_s or None,
            on_backlog_full=config.on_backlog_full,
        )


def _schedule(config: SaleConfig, skus: dict[str, SkuReport], now_ms: int) -> dict[str, Any]:
    """The sale's state and countdowns at `now_ms`, as admit.lua would judge them."""
    opens, closes = config.opens_at_ms, config.closes_at_ms
    state: SaleState
    if opens and now_ms < opens:
        state = "scheduled"
    elif closes and now_ms >= closes:
        state = "closed"
    elif skus and all(sku.remaining == 0 for sku in skus.values()):
        state = "sold_out"
    else:
        state = "open"
    return {
        "state": state,
        "opens_at": rfc3339(opens) if opens else None,
        "closes_at": rfc3339(closes) if closes else None,
        "seconds_to_open": round((opens - now_ms) / 1000, 3) if state == "scheduled" else None,
        "seconds_to_close": (
            round((closes - now_ms) / 1000, 3) if closes and state != "closed" else None
        ),
    }

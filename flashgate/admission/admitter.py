"""Admit, confirm and release orders: the narrow Redis side of admission.

`admit` reserves stock under every limit in one atomic script call per sale and
batch (see `admit.lua`); `confirm` turns a reservation into accepted stock once
Kafka acknowledged the order; `release` returns it when Kafka did not. The
reservation id is the order id. Redis errors leave this module only as
`AdmissionUnavailable`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

import msgspec

from flashgate.admission.batcher import TickBatcher
from flashgate.admission.errors import AdmissionUnavailable
from flashgate.admission.keys import SaleKeys
from flashgate.redis_client import RedisFailure
from flashgate.redis_scripts.loader import NotReplicated, RedisScripts, Replication, ScriptPipeline

log = logging.getLogger(__name__)

Reason = Literal[
    "ok",
    "accepted",
    "unknown_sale",
    "unknown_sku",
    "quantity",
    "sold_out",
    "purchase_limit",
    "rate_limited",
    "sale_not_open",
    "sale_closed",
    "ticket",
]
# What confirm.lua did with one order: confirmed now, fenced (settled "not stored"
# before this record turned up), or nothing (already confirmed, or released).
Confirmation = Literal["confirmed", "fenced", "none"]
_CONFIRMATIONS: dict[str, Confirmation] = {"1": "confirmed", "0": "fenced", "-": "none"}
Limiter = Literal["sale", "user", "ip"]

EXPIRED_PER_CALL = 500
# How long reaped and adopted order ids are remembered, unless told: Kafka's default
# retention here (a record can turn up as long as the topic keeps it).
SETTLED_KEEP_MS = 3 * 24 * 3600 * 1000
SCRIPTS = ("admit", "confirm", "release", "reap", "load_sale")


class Reservation(msgspec.Struct, frozen=True):
    reservation_id: str
    sale_id: str
    sku: str
    quantity: int
    user_id: str


class Verdict(msgspec.Struct, frozen=True):
    """What admission decided, with what the answer needs to be honest."""

    reason: Reason
    remaining: int | None = None  # ok, sold_out: units left for the SKU
    # quantity, ok, sold_out: per_order_max; purchase_limit: per_user_max
    limit: int | None = None
    bought: int | None = None  # purchase_limit: units the user already holds
    limiter: Limiter | None = None  # rate_limited: which limit said no
    retry_after_ms: int = 0
    burst: int = 0
    rate_per_s: float = 0.0
    # ok: the order id already held this reservation (a retry after its gateway
    # died). Its first record may be in Kafka, so a failed produce must not release it.
    held: bool = False
    # sale_not_open: when the sale opens; sale_closed: when it closed (ms since the
    # epoch, Redis's clock). retry_after_ms is then the wait until opening; for a
    # ticket (the fair start's window), the wait until the draw (see await_draw).
    at_ms: int = 0

    @property
    def admitted(self) -> bool:
        return self.reason == "ok"


class Expired(msgspec.Struct, frozen=True):
    """A reservation past its deadline, neither confirmed nor released."""

    reservation: Reservation
    deadline_ms: float


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_verdict(line: str) -> Verdict:
    """One line of admit.lua's reply."""
    reason, *fields = line.split(" ")
    if reason == "ok":
        return Verdict("ok", int(fields[0]), int(fields[1]), held=len(fields) > 2)
    if reason == "accepted":
        return Verdict("accepted")
    if reason == "sold_out":
        return Verdict("sold_out", remaining=int(fields[0]), limit=int(fields[1]))
    if reason == "quantity":
        return Verdict("quantity", limit=int(fields[0]))
    if reason == "purchase_limit":
        return Verdict("purchase_limit", limit=int(fields[0]), bought=int(fields[1]))
    if reason == "rate_limited":
        return Verdict(
            "rate_limited",
            limiter=fields[0],  # type: ignore[arg-type]
            retry_after_ms=int(float(fields[1])),
            burst=int(float(fields[2])),
            rate_per_s=float(fields[3]),
        )
    if reason == "not_open":
        return Verdict("sale_not_open", at_ms=int(fields[0]), retry_after_ms=int(fields[1]))
    if reason == "closed":
        return Verdict("sale_closed", at_ms=int(fields[0]))
    if reason == "ticket":
        return Verdict("ticket", retry_after_ms=int(fields[0]))
    if reason in ("unknown_sale", "unknown_sku"):
        return Verdict(reason)  # type: ignore[arg-type]
    raise AdmissionUnavailable(f"unexpected reply from admit.lua: {line!r}")


def _order_line(reservation: Reservation) -> str:
    # Ids, SKUs and users are validated tokens: no tab or newline can occur in them.
    r = reservation
    return f"{r.reservation_id}\t{r.sku}\t{r.quantity}\t{r.user_id}"


def _ip_field(client_ip: str) -> str:
    # The one free-form field (a trusted X-Forwarded-For); keep the line format intact.
    if "\t" in client_ip or "\n" in client_ip:
        return client_ip.replace("\t", " ").replace("\n", " ")
    return client_ip


def _group(items: Sequence[Reservation]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(item.sale_id, []).append(index)
    return groups


class Admitter:
    """Admission calls, batched per event-loop tick unless `batching` is off."""

    def __init__(
        self,
        scripts: RedisScripts,
        *,
        reservation_ttl_ms: int,
        settled_keep_ms: int = SETTLED_KEEP_MS,
        batching: bool = True,
        batch_max: int = 256,
        now_ms: Callable[[], float] | None = None,
        observe_batch: Callable[[int], None] | None = None,
        observe_seconds: Callable[[float], None] | None = None,
        wait: Replication | None = None,
    ) -> None:
        self._scripts = scripts
        # Answer admissions only once this many replicas hold them (guarantee 7).
        self._wait = wait if wait is not None and wait.replicas > 0 else None
        self._ttl_ms = str(reservation_ttl_ms)
        self._keep_ms = str(settled_keep_ms)
        # Tests inject time; in service the Redis server's clock is the one clock
        # every gateway replica shares.
        self._now_ms = now_ms
        self._batcher: TickBatcher[tuple[Reservation, str], Verdict] | None = (
            TickBatcher(
                self._admit_batch,
                max_batch=batch_max,
                observe=observe_batch,
                observe_seconds=observe_seconds,
            )
            if batching
            else None
        )

    @property
    def batcher(self) -> TickBatcher[tuple[Reservation, str], Verdict] | None:
        return self._batcher

    def _now_arg(self) -> str:
        return "" if self._now_ms is None else repr(self._now_ms())

    def admit(self, reservation: Reservation, client_ip: str) -> Awaitable[Verdict]:
        """Admit one order, batched with concurrent ones unless batching is off."""
        if self._batcher is not None:
            return self._batcher.submit((reservation, client_ip))
        return self._admit_alone(reservation, client_ip)

    async def await_draw(
        self, reservation: Reservation, client_ip: str, verdict: Verdict
    ) -> Verdict:
        """An order holding a fair-start ticket: ask again once the window has closed, for
        the draw's answer (any gateway's first call after the window draws them all)."""
        while verdict.reason == "ticket":
            await asyncio.sleep(max(verdict.retry_after_ms, 1) / 1000)
            verdict = await self.admit(reservation, client_ip)
        return verdict

    async def _admit_alone(self, reservation: Reservation, client_ip: str) -> Verdict:
        result = (await self._admit_batch([(reservation, client_ip)]))[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def _admit_call(self, items: Sequence[tuple[Reservation, str]]) -> tuple[list[str], list[str]]:
        keys = SaleKeys.of(items[0][0].sale_id)
        orders = "\n".join(
            [f"{_order_line(reservation)}\t{_ip_field(ip)}" for reservation, ip in items]
        )
        return [*keys.core, keys.sale_tat], [self._now_arg(), self._ttl_ms, str(len(items)), orders]

    async def _admit_batch(
        self, items: list[tuple[Reservation, str]]
    ) -> list[Verdict | BaseException]:
        groups = _group([reservation for reservation, _ in items])
        results: list[Verdict | BaseException] = [AdmissionUnavailable("not admitted")] * len(items)
        try:
            if len(groups) == 1 and self._wait is None:
                keys, args = self._admit_call(items)
                replies = [await self._scripts.call("admit", keys, args)]
            else:
                pipe = self._scripts.pipeline(wait=self._wait)
                for indices in groups.values():
                    pipe.script("admit", *self._admit_call([items[i] for i in indices]))
                replies = await pipe.execute()
        except RedisFailure as exc:
            raise AdmissionUnavailable(f"admission failed: {exc}") from exc
        for indices, reply in zip(groups.values(), replies, strict=True):
            if isinstance(reply, NotReplicated):  # answered unavailable below
                await self._give_back_unreplicated([items[i][0] for i in indices], reply)
        for indices, reply in zip(groups.values(), replies, strict=True):
            for index, one in zip(indices, _group_reply(reply, len(indices)), strict=True):
                results[index] = one
        return results

    async def _give_back_unreplicated(
        self, reservations: list[Reservation], failure: NotReplicated
    ) -> None:
        """A batch the replicas did not confirm in time is answered 503: return the units
        it reserved. Not those a retry found already held (their first attempt may be
        in Kafka): the reaper settles those."""
        verdicts = _group_reply(failure.result, len(reservations))
        fresh = [
            reservation
            for reservation, verdict in zip(reservations, verdicts, strict=True)
            if isinstance(verdict, Verdict) and verdict.admitted and not verdict.held
        ]
        if not fresh:
            return
        try:
            await self.release(fresh)
        except AdmissionUnavailable as exc:
            # Unconfirmed reservations expire and the reaper returns their units.
            log.warning("%d unreplicated reservations left to the reaper: %s", len(fresh), exc)

    def add_confirms(
        self, pipe: ScriptPipeline, reservations: Sequence[Reservation], *, adopt: bool = False
    ) -> Callable[[list[Any]], list[Confirmation]]:
        """Queue confirm calls on `pipe`; return what reads their results.

        `adopt`: the caller is not the order's own gateway (a reaper that found the
        record, the drain about to deliver it), so an order confirmed now is
        remembered as adopted (admit.lua answers a retry of it "accepted").
        """
        groups = _group(reservations)
        starts: list[tuple[int, list[int]]] = []
        adopt_arg = self._keep_ms if adopt else ""
        for sale_id, indices in groups.items():
            orders = "\n".join([_order_line(reservations[index]) for index in indices])
            starts.append((len(pipe), indices))
            pipe.script(
                "confirm", SaleKeys.of(sale_id).core, [str(len(indices)), orders, adopt_arg]
            )

        def read(results: list[Any]) -> list[Confirmation]:
            done: list[Confirmation] = ["none"] * len(reservations)
            for position, indices in starts:
                reply = results[position]
                if isinstance(reply, BaseException):
                    raise AdmissionUnavailable(f"confirm failed: {reply}")
                flags = _text(reply)
                if len(flags) != len(indices) or not set(flags) <= _CONFIRMATIONS.keys():
                    raise AdmissionUnavailable(f"unexpected reply from confirm.lua: {flags!r}")
                for index, flag in zip(indices, flags, strict=True):
                    done[index] = _CONFIRMATIONS[flag]
            return done

        return read

    async def confirm(
        self, reservations: Sequence[Reservation], *, adopt: bool = False
    ) -> list[Confirmation]:
        """Confirm now, in one round trip (see `add_confirms`)."""
        pipe = self._scripts.pipeline()
        read = self.add_confirms(pipe, reservations, adopt=adopt)
        try:
            return read(await pipe.execute())
        except RedisFailure as exc:
            raise AdmissionUnavailable(f"confirm failed: {exc}") from exc

    async def release(self, reservations: Sequence[Reservation]) -> int:
        """Return reserved units to stock; safe to repeat."""
        released = 0
        try:
            for sale_id, indices in _group(reservations).items():
                ids = [reservations[i].reservation_id for i in indices]
                released += int(await self._scripts.call("release", SaleKeys.of(sale_id).core, ids))
        except RedisFailure as exc:
            raise AdmissionUnavailable(f"release failed: {exc}") from exc
        return released

    async def expired(self, sale_id: str, limit: int = EXPIRED_PER_CALL) -> list[Expired]:
        """Up to `limit` of a sale's reservations past their deadline, oldest first."""
        keys = SaleKeys.of(sale_id)
        redis = self._scripts.redis
        try:
            now_ms = self._now_ms() if self._now_ms is not None else await _server_ms(redis)
            due: list[Any] = await redis.zrangebyscore(
                keys.pending, "-inf", now_ms, start=0, num=limit, withscores=True
            )
            if not due:
                return []
            details: list[Any] = await redis.hmget(keys.reservations, [member for member, _ in due])
        except RedisFailure as exc:
            raise AdmissionUnavailable(f"listing expired reservations failed: {exc}") from exc
        found: list[Expired] = []
        for (member, deadline), detail in zip(due, details, strict=True):
            if detail is None:  # confirmed or released since
                continue
            sku, quantity, user = _text(detail).split("\t", 2)
            reservation = Reservation(_text(member), sale_id, sku, int(quantity), user)
            found.append(Expired(reservation, float(deadline)))
        return found

    async def reap(self, sale_id: str, reservation_ids: Sequence[str]) -> list[str]:
        """Return these expired reservations to stock (only once proven absent from Kafka);
        the ids returned, whose records the drain will fence from now on."""
        if not reservation_ids:
            return []
        try:
            keys = SaleKeys.of(sale_id).core
            reply = await self._scripts.call(
                "reap", keys, [self._now_arg(), self._keep_ms, *reservation_ids]
            )
        except RedisFailure as exc:
            raise AdmissionUnavailable(f"reap failed: {exc}") from exc
        return [_text(order_id) for order_id in reply]

    async def aclose(self) -> None:
        if self._batcher is not None:
            await self._batcher.aclose()


async def _server_ms(redis: Any) -> float:
    seconds, micros = await redis.time()
    return float(seconds) * 1000 + float(micros) / 1000


def _group_reply(reply: Any, count: int) -> list[Verdict | BaseException]:
    if isinstance(reply, BaseException):
        return [AdmissionUnavailable(f"admission failed: {reply}") for _ in range(count)]
    lines = _text(reply).split("\n")
    if len(lines) != count:
        return [AdmissionUnavailable(f"unexpected reply from admit.lua: {reply!r}")] * count
    return [_verdict_or_error(line) for line in lines]


def _verdict_or_error(line: str) -> Verdict | BaseException:
    try:
        return parse_verdict(line)
    except (AdmissionUnavailable, ValueError, IndexError) as exc:
        return AdmissionUnavailable(f"unexpected reply from admit.lua: {line!r} ({exc})")

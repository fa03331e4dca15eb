"""Admission scripts against a real Redis: every verdict, reservations, GCRA accuracy.

Each test that takes `run` runs twice: on a standalone Redis and on a real Redis
Cluster (3 primaries, 3 replicas), where the scripts' calls are routed by their
sale's hash tag. Time is injected (the scripts take `now` in ms), so rate-limit
tests are exact and need no sleeping.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest

from flashgate.admission import admitter as admitter_module
from flashgate.admission.admitter import Admitter, Reservation, Verdict
from flashgate.admission.errors import AdmissionUnavailable
from flashgate.admission.idempotency import IdempotencyStore
from flashgate.admission.keys import SaleKeys
from flashgate.admission.sales import RateSpec, RatesSpec, SaleDefinition, SaleStore
from flashgate.ids import new_order_id
from flashgate.redis_client import RedisClient, create_redis
from flashgate.redis_scripts.loader import RedisScripts
from flashgate.settings import RedisSettings, SalesSettings

T = TypeVar("T")
NO_LIMIT = RateSpec(per_second=0, burst=1)
OPEN = RatesSpec(sale=NO_LIMIT, user=NO_LIMIT, ip=NO_LIMIT)
TTL_MS = 30_000


class Clock:
    def __init__(self, start_ms: float = 1_700_000_000_000.0) -> None:
        self.now = start_ms

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(self, settings: RedisSettings, clock: Clock, batching: bool) -> None:
        self.redis: RedisClient = create_redis(settings, retries=False)
        self.scripts = RedisScripts(
            self.redis, (*admitter_module.SCRIPTS, "idem_begin", "idem_finish", "idem_release")
        )
        self.sales = SaleStore(self.scripts)
        self.admitter = Admitter(
            self.scripts,
            reservation_ttl_ms=TTL_MS,
            batching=batching,
            now_ms=clock,
        )
        self.clock = clock

    async def load(self, sale_id: str = "s1", **fields: Any) -> None:
        fields.setdefault("rates", OPEN)
        fields.setdefault("stock", {"A": 10})
        await self.sales.load(sale_id, SaleDefinition(**fields), SalesSettings())

    async def admit(
        self, sku: str = "A", quantity: int = 1, user: str = "u1", ip: str = "1.1.1.1",
        sale_id: str = "s1",
    ) -> tuple[Reservation, Verdict]:  # fmt: skip
        reservation = Reservation(new_order_id(), sale_id, sku, quantity, user)
        return reservation, await self.admitter.admit(reservation, ip)

    async def remaining(self, sale_id: str = "s1", sku: str = "A") -> int:
        report = await self.sales.report(sale_id)
        assert report is not None
        return report.skus[sku].remaining


@pytest.fixture
def run(any_redis: RedisSettings) -> Iterator[Callable[[Callable[[Harness], Awaitable[T]]], T]]:
    settings = any_redis

    def runner(body: Callable[[Harness], Awaitable[T]], batching: bool = False) -> T:
        async def main() -> T:
            harness = Harness(settings, Clock(), batching)
            try:
                return await body(harness)
            finally:
                await harness.admitter.aclose()
                await harness.redis.flushdb()
                await harness.redis.aclose()

        return asyncio.run(main())

    yield runner


def test_each_verdict(run: Any) -> None:
    async def body(h: Harness) -> None:
        _, verdict = await h.admit(sale_id="nope")
        assert verdict.reason == "unknown_sale"
        await h.load(stock={"A": 3}, per_order_max=2, per_user_max=3)
        assert (await h.admit(sku="B"))[1].reason == "unknown_sku"
        assert (await h.admit(quantity=3))[1] == Verdict("quantity", limit=2)
        assert (await h.admit(quantity=2))[1] == Verdict("ok", remaining=1, limit=2)
        assert (await h.admit(quantity=2, user="u2"))[1] == Verdict("sold_out", 1, limit=2)
        assert (await h.admit(quantity=1))[1] == Verdict("ok", remaining=0, limit=2)
        await h.load(stock={"A": 10}, per_order_max=2, per_user_max=3)
        assert (await h.admit(quantity=1))[1] == Verdict("purchase_limit", limit=3, bought=3)
        assert (await h.admit(quantity=1, user="u2"))[1].reason == "ok"

    run(body)


def test_rate_limits_name_the_limiter_and_the_wait(run: Any) -> None:
    async def body(h: Harness) -> None:
        rates = RatesSpec(
            sale=RateSpec(per_second=100, burst=50),
            user=RateSpec(per_second=1, burst=2),
            ip=RateSpec(per_second=10, burst=3),
        )
        await h.load(stock={"A": 1000}, rates=rates)
        assert (await h.admit(user="a"))[1].admitted
        assert (await h.admit(user="a"))[1].admitted
        _, verdict = await h.admit(user="a")
        assert (verdict.reason, verdict.limiter) == ("rate_limited", "user")
        assert verdict.retry_after_ms == 1000
        assert (verdict.burst, verdict.rate_per_s) == (2, 1.0)
        assert (await h.admit(user="b"))[1].admitted  # the IP's third request
        _, verdict = await h.admit(user="c")
        assert (verdict.limiter, verdict.retry_after_ms) == ("ip", 100)
        # A refused request is not charged: after 100 ms the IP has room for one.
        h.clock.now += 100
        assert (await h.admit(user="c"))[1].admitted
        # Another IP is not limited by the first one's budget.
        assert (await h.admit(user="d", ip="2.2.2.2"))[1].admitted

    run(body)


@pytest.mark.parametrize(("rate", "burst", "seconds"), [(100.0, 20, 10), (1000.0, 500, 2)])
def test_gcra_admits_rate_times_time_plus_burst(
    run: Any, rate: float, burst: int, seconds: int
) -> None:
    async def body(h: Harness) -> int:
        rates = RatesSpec(sale=RateSpec(per_second=rate, burst=burst), user=NO_LIMIT, ip=NO_LIMIT)
        await h.load(stock={"A": 10**9}, rates=rates)
        admitted = 0
        step_ms = 1000 / (rate * 4)  # offered 4x the rate
        start = h.clock.now
        while h.clock.now - start < seconds * 1000:
            admitted += (await h.admit(user=f"u{admitted}"))[1].admitted
            h.clock.now += step_ms
        return admitted

    admitted = run(body)
    expected = rate * seconds + burst
    assert abs(admitted - expected) <= 0.02 * expected, (admitted, expected)


def test_expired_reservations_wait_for_the_reaper_and_a_late_confirm_is_fenced(run: Any) -> None:
    async def body(h: Harness) -> None:
        await h.load(stock={"A": 3})
        first, verdict = await h.admit()
        assert verdict == Verdict("ok", remaining=2, limit=10)
        second, _ = await h.admit()
        third, _ = await h.admit()
        assert (await h.admit())[1].reason == "sold_out"
        # Not yet expired: nothing to list, and reap leaves it alone.
        assert await h.admitter.expired("s1") == []
        assert await h.admitter.reap("s1", [first.reservation_id]) == []
        # The gateway that held them died. Past the deadline admission still does not
        # hand their units out: one of them may be in Kafka (see gateway/reaper.py).
        h.clock.now += TTL_MS + 1
        assert (await h.admit())[1].reason == "sold_out"
        expired = await h.admitter.expired("s1")
        assert {e.reservation for e in expired} == {first, second, third}
        assert all(e.deadline_ms <= h.clock.now for e in expired)
        # The reaper found `third` in Kafka and proved the other two absent.
        assert await h.admitter.confirm([third], adopt=True) == ["confirmed"]
        ids = [first.reservation_id, second.reservation_id]
        assert sorted(await h.admitter.reap("s1", ids)) == sorted(ids)
        assert await h.admitter.reap("s1", ids) == []  # safe to repeat
        assert await h.admitter.expired("s1") == []
        assert await h.remaining() == 2
        assert (await h.admit())[1] == Verdict("ok", remaining=1, limit=10)
        # A record of a reaped order that still turns up (a broker that wrote it after a
        # long stall) is fenced: its unit is not taken again, nothing is counted.
        assert await h.admitter.confirm([first]) == ["fenced"]
        assert await h.admitter.confirm([first], adopt=True) == ["fenced"]
        assert await h.remaining() == 1
        report = await h.sales.report("s1")
        assert report is not None
        assert report.accepted_orders == 1
        assert report.skus["A"].accepted == 1
        # A retry of the adopted order (same order id) is answered "accepted", uncharged.
        assert (await h.admitter.admit(third, "1.1.1.1")).reason == "accepted"
        assert await h.remaining() == 1
        # A retry of a reaped order places it again (the fence is lifted: its late record
        # is the same order) and is charged once.
        assert (await h.admitter.admit(first, "1.1.1.1")).admitted
        assert await h.remaining() == 0
        assert await h.admitter.confirm([first], adopt=True) == ["confirmed"]
        assert await h.admitter.confirm([first]) == ["none"]
        report = await h.sales.report("s1")
        assert report is not None
        assert report.accepted_orders == 2 and report.skus["A"].accepted == 2

    run(body)


def test_same_order_id_admitted_again_keeps_one_reservation(run: Any) -> None:
    """A retried Idempotency-Key after its gateway died re-admits the same order id."""

    async def body(h: Harness) -> None:
        await h.load(stock={"A": 3}, per_user_max=2)
        first, verdict = await h.admit(quantity=2)
        assert verdict == Verdict("ok", remaining=1, limit=10)
        h.clock.now += TTL_MS / 2
        # Not charged twice: not over the per-user limit, stock unchanged; marked held,
        # so a failed produce of the retry leaves the units to the reaper.
        assert await h.admitter.admit(first, "1.1.1.1") == Verdict(
            "ok", remaining=1, limit=10, held=True
        )
        assert await h.remaining() == 1
        # Its deadline was renewed from the retry.
        h.clock.now += TTL_MS / 2 + 1
        assert await h.admitter.expired("s1") == []
        assert await h.admitter.confirm([first]) == ["confirmed"]
        report = await h.sales.report("s1")
        assert report is not None
        assert report.skus["A"].reserved == 0 and report.skus["A"].accepted == 2
        assert report.skus["A"].remaining == 1
        assert (await h.admit(user="u1"))[1].reason == "purchase_limit"

    run(body)


def test_the_schedule_opens_and_closes_admission_by_the_scripts_clock(run: Any) -> None:
    """Before opens_at every order is "not open" with the exact wait; from closes_at on,
    "closed"; a retry of an order admitted before closing keeps its reservation."""

    async def body(h: Harness) -> None:
        start = h.clock.now
        opens = datetime.fromtimestamp((start + 5_000) / 1000, UTC)
        closes = datetime.fromtimestamp((start + 65_000) / 1000, UTC)
        await h.load(opens_at=opens, closes_at=closes)
        assert (await h.admit())[1] == Verdict(
            "sale_not_open", at_ms=int(start) + 5_000, retry_after_ms=5_000
        )
        h.clock.now = start + 4_999.5
        assert (await h.admit())[1].retry_after_ms == 1  # rounded up, never 0
        assert await h.remaining() == 10  # nothing reserved before opening
        h.clock.now = start + 5_000
        before_close, verdict = await h.admit()
        assert verdict.admitted
        h.clock.now = start + 65_000
        assert (await h.admit(user="u2"))[1] == Verdict("sale_closed", at_ms=int(start) + 65_000)
        # Admitted while open, retried after closing (its gateway died): still its order.
        assert (await h.admitter.admit(before_close, "1.1.1.1")).held
        assert await h.remaining() == 9
        # The schedule by Redis's own clock: a sale that opened in 2020 is open.
        await h.load("live", opens_at=datetime(2020, 1, 1, tzinfo=UTC))
        live = Admitter(h.scripts, reservation_ttl_ms=TTL_MS, batching=False)
        order = Reservation(new_order_id(), "live", "A", 1, "u1")
        assert (await live.admit(order, "1.1.1.1")).admitted
        report = await h.sales.report("live")
        assert report is not None and report.state == "open"
        assert report.opens_at == "2020-01-01T00:00:00.000Z"

    run(body)


CHI2_9DF_P001 = 21.666  # chi-square, 9 degrees of freedom: exceeded by chance 1 % of the time


def _arrival_deciles(ranks: list[int], arrivals: int) -> list[int]:
    bins = [0] * 10
    for rank in ranks:
        bins[rank * 10 // arrivals] += 1
    return bins


def test_a_fair_start_draws_the_windows_orders_by_ticket_not_by_arrival(run: Any) -> None:
    """W = 500 ms, stock 100, 1,000 orders in the window: exactly 100 win, spread evenly
    over arrival order (fixed seed: the draw's salt and the order ids are fixed)."""

    async def body(h: Harness) -> tuple[list[int], list[int]]:
        start = h.clock.now
        opens = datetime.fromtimestamp((start + 1_000) / 1000, UTC)
        definition = SaleDefinition(
            stock={"A": 100}, rates=OPEN, per_user_max=0, opens_at=opens, fair_start_ms=500
        )
        await h.sales.load("fair", definition, SalesSettings(), lottery_salt="seed-42")
        orders = [Reservation(f"FAIR{i:06d}", "fair", "A", 1, f"u{i}") for i in range(1000)]
        for rank, order in enumerate(orders):  # arrivals spread over the window, in order
            h.clock.now = start + 1_000 + rank * 0.499
            verdict = await h.admitter.admit(order, "1.1.1.1")
            assert verdict == Verdict(
                "ticket", retry_after_ms=math.ceil(1_500 - (h.clock.now - start))
            )
        # A retry inside the window (same order id) keeps its one ticket.
        assert (await h.admitter.admit(orders[0], "1.1.1.1")).reason == "ticket"
        assert await h.remaining("fair") == 100  # nothing reserved before the draw
        h.clock.now = start + 1_500
        # The waiting requests come back in any order; the first call draws them all.
        answers = {}
        for order in reversed(orders):
            answers[order.reservation_id] = await h.admitter.admit(order, "1.1.1.1")
        winners = [rank for rank, o in enumerate(orders) if answers[o.reservation_id].admitted]
        losers = {answers[o.reservation_id].reason for o in orders} - {"ok"}
        assert losers == {"sold_out"}
        assert await h.remaining("fair") == 0
        report = await h.sales.report("fair")
        assert report is not None and report.skus["A"].reserved == 100
        # After the window, orders are admitted on arrival again (nothing left here).
        late = Reservation("LATE", "fair", "A", 1, "late")
        assert (await h.admitter.admit(late, "1.1.1.1")).reason == "sold_out"

        # The same arrivals without a fair start: the first 100 take everything.
        await h.load("fifo", stock={"A": 100}, per_user_max=0)
        fifo = []
        for rank in range(1000):
            order = Reservation(f"FIFO{rank:06d}", "fifo", "A", 1, f"u{rank}")
            if (await h.admitter.admit(order, "1.1.1.1")).admitted:
                fifo.append(rank)
        return winners, fifo

    winners, fifo = run(body)
    assert len(winners) == 100
    deciles = _arrival_deciles(winners, 1000)
    chi2 = sum((count - 10) ** 2 / 10 for count in deciles)
    assert chi2 < CHI2_9DF_P001, (deciles, chi2)
    assert fifo == list(range(100))
    assert _arrival_deciles(fifo, 1000) == [100] + [0] * 9  # what the lottery undoes


def test_a_batch_that_does_not_parse_changes_nothing(run: Any) -> None:
    """Lines are split on newlines in Lua: a field with one (impossible past the
    schema) must fail the call before any write, not reserve half a batch."""

    async def body(h: Harness) -> None:
        await h.load(stock={"A": 3})
        bad = Reservation(new_order_id(), "s1", "A", 1, "u\nx")
        with pytest.raises(AdmissionUnavailable):
            await h.admitter.admit(bad, "1.1.1.1")
        assert await h.remaining() == 3
        # The client IP is free-form (X-Forwarded-For): tabs and newlines are neutralised.
        assert (
            await h.admitter.admit(Reservation(new_order_id(), "s1", "A", 1, "u1"), "a\tb\nc")
        ).admitted
        assert await h.remaining() == 2

    run(body)


def test_confirm_and_release(run: Any) -> None:
    async def body(h: Harness) -> None:
        await h.load(stock={"A": 5, "B": 5}, per_user_max=4)
        a, _ = await h.admit(quantity=2)
        b, _ = await h.admit(sku="B", quantity=2)
        assert await h.admitter.confirm([a]) == ["confirmed"]
        assert await h.admitter.release([b]) == 1
        assert await h.admitter.release([b]) == 0  # safe to repeat
        report = await h.sales.report("s1")
        assert report is not None
        assert report.skus["A"].remaining == 3 and report.skus["A"].accepted == 2
        assert report.skus["B"].remaining == 5 and report.skus["B"].reserved == 0
        assert report.pending_reservations == 0
        # The released units no longer count against the user's limit.
        assert (await h.admit(sku="B", quantity=2))[1].admitted

    run(body)


def test_reload_keeps_what_is_sold(run: Any) -> None:
    async def body(h: Harness) -> None:
        await h.load(stock={"A": 5, "B": 1})
        sold, _ = await h.admit(quantity=3)
        await h.admitter.confirm([sold])
        await h.load(stock={"A": 4})
        assert await h.remaining() == 1
        assert (await h.admit(sku="B"))[1].reason == "unknown_sku"
        await h.load(stock={"A": 2})  # below what is sold: nothing left, never negative
        assert await h.remaining() == 0
        assert (await h.admit())[1] == Verdict("sold_out", remaining=0, limit=10)

    run(body)


def test_batched_admission_matches_one_by_one(run: Any) -> None:
    async def body(h: Harness) -> list[str]:
        await h.load(stock={"A": 30}, per_user_max=3)
        await h.load("s2", stock={"A": 5})
        users = [f"u{i % 7}" for i in range(60)]
        answers = await asyncio.gather(
            *(h.admit(user=u, sale_id="s1" if i % 3 else "s2") for i, u in enumerate(users))
        )
        assert h.admitter.batcher is not None
        assert h.admitter.batcher.batches < len(users)
        return [verdict.reason for _, verdict in answers]

    reasons = run(body, batching=True)
    s1 = [r for i, r in enumerate(reasons) if i % 3]
    s2 = [r for i, r in enumerate(reasons) if not i % 3]
    assert s1.count("ok") == 21 and s1.count("purchase_limit") == 19  # 7 users x 3
    assert s2.count("ok") == 5 and s2.count("sold_out") == 15


def test_scripts_reload_after_script_flush(run: Any) -> None:
    async def body(h: Harness) -> None:
        await h.load()
        await h.redis.script_flush()
        reservation, verdict = await h.admit()
        assert verdict.admitted
        await h.redis.script_flush()
        pipe = h.scripts.pipeline()
        pipe.command("INCR", "{sale:s1}:probe")
        pipe.script("reap", SaleKeys.of("s1").core, ["", "60000", reservation.reservation_id])
        # The injected clock is years behind the server's: the reservation is long expired.
        replies = await pipe.execute()
        assert replies[0] == 1
        assert [r.decode() if isinstance(r, bytes) else r for r in replies[1]] == [
            reservation.reservation_id
        ]

    run(body)


def test_idempotency_claims(run: Any) -> None:
    async def body(h: Harness) -> None:
        store = IdempotencyStore(h.scripts, ttl_s=60, pending_ttl_s=5)
        claim = await store.begin("anon", "k1", "d1", "ORDER-1")
        assert claim.state == "new"
        assert (await store.begin("anon", "k1", "d2", "ORDER-1")).state == "reused"
        assert (await store.wait("anon", "k1", "d1", 0.05, "ORDER-1")).state == "pending"
        assert (
            await store.begin("other", "k1", "d2", "ORDER-1")
        ).state == "new"  # scoped per token

        async def finish_soon() -> None:
            await asyncio.sleep(0.05)
            assert await store.finish(claim, 202, b'{"order_id":"x"}')

        waiting = asyncio.create_task(store.wait("anon", "k1", "d1", 2, "ORDER-1"))
        await finish_soon()
        done = await waiting
        assert (done.state, done.status, done.answer) == ("done", 202, b'{"order_id":"x"}')

        retry = await store.begin("anon", "k2", "d1", "ORDER-A")
        assert retry.order_id == "ORDER-A"
        await store.release(retry)
        again = await store.begin("anon", "k2", "d1", "ORDER-B")
        # Released, then claimed anew: with the *first* order id, so an order whose
        # produce was not answered can never become two orders.
        assert (again.state, again.order_id) == ("new", "ORDER-A")
        assert not await store.finish(retry, 202, b"{}")  # the claim is no longer its

        short = IdempotencyStore(h.scripts, ttl_s=60, pending_ttl_s=0.05)
        dead = await short.begin("anon", "k3", "d1", "ORDER-C")
        assert (await short.begin("anon", "k3", "d1", "ORDER-D")).state == "pending"
        await asyncio.sleep(0.06)  # the dead claim's lease (50 ms here) runs out
        taken = await short.begin("anon", "k3", "d1", "ORDER-D")
        assert (taken.state, taken.order_id) == ("new", "ORDER-C")
        assert not await short.finish(dead, 202, b"{}")

    run(body)


def test_batched_idempotency_claims_make_one_owner(run: Any) -> None:
    async def body(h: Harness) -> None:
        store = IdempotencyStore(
            h.scripts,
            ttl_s=60,
            pending_ttl_s=5,
            batching=True,
        )
        try:
            claims = await asyncio.gather(
                *(store.begin("anon", "same", "d", "ORDER-1") for _ in range(30))
            )
            assert sorted(c.state for c in claims) == ["new"] + ["pending"] * 29
            other = await asyncio.gather(
                store.begin("anon", "same", "x", "ORDER-1"), store.begin("a", "b", "c", "ORDER-1")
            )
            assert [c.state for c in other] == ["reused", "new"]
        finally:
            await store.aclose()

    run(body)

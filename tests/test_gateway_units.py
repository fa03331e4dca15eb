"""Pure pieces of the gateway: rate-limit headers, token matching, the sold-out memory,
the tick batcher, header parsing."""

from __future__ import annotations

import asyncio
import time

import pytest

from flashgate.admission.batcher import TickBatcher
from gateway.auth import bearer_token, matching_token
from gateway.orders import OrderHeaders, client_ip
from gateway.ratelimit_headers import rate_limit_headers, retry_after_s
from gateway.soldout import SoldOutCache


def test_rate_limit_headers() -> None:
    assert rate_limit_headers("user", 1500, 3, 1.0) == {
        "Retry-After": "2",
        "RateLimit-Policy": '"user";q=3;w=3',
        "RateLimit": '"user";r=0;t=2',
    }
    assert retry_after_s(1) == 1 and retry_after_s(0) == 1
    assert rate_limit_headers("sale", 10, 1000, 5000.0)["RateLimit-Policy"] == '"sale";q=1000;w=1'


def test_tokens_match_in_constant_time_shape() -> None:
    tokens = [b"alpha", b"beta"]
    assert matching_token("beta", tokens) == b"beta"
    assert matching_token("bet", tokens) is None
    assert matching_token(None, tokens) is None
    assert matching_token("\udcff", tokens) is None  # undecodable bytes never crash
    scope = {"headers": [(b"authorization", b"Bearer  beta ")]}
    assert bearer_token(scope) == "beta"
    assert bearer_token({"headers": [(b"authorization", b"Basic x")]}) is None
    assert bearer_token({"headers": []}) is None


def test_sold_out_memory_expires_and_forgets() -> None:
    cache = SoldOutCache(0.05)
    cache.mark("s", "A", 10)
    assert cache.lookup("s", "A") == 10 and cache.lookup("s", "B") is None
    cache.forget("s", "A")
    assert cache.lookup("s", "A") is None
    cache.mark("s", "A", 10)
    cache.mark("s", "B", 5)
    cache.forget("s")
    assert cache.lookup("s", "B") is None
    cache.mark("s", "A", 10)
    time.sleep(0.06)
    assert cache.lookup("s", "A") is None
    off = SoldOutCache(0)
    off.mark("s", "A", 10)
    assert not off.enabled and off.lookup("s", "A") is None


def test_tick_batcher_groups_and_isolates_errors() -> None:
    seen: list[list[int]] = []

    async def flush(items: list[int]) -> list[int | BaseException]:
        seen.append(items)
        await asyncio.sleep(0.01)
        return [ValueError(i) if i == 3 else i * 10 for i in items]

    async def main() -> list[int | BaseException]:
        batcher: TickBatcher[int, int] = TickBatcher(flush, max_batch=4)
        results = await asyncio.gather(
            *(batcher.submit(i) for i in range(10)), return_exceptions=True
        )
        await batcher.aclose()
        return results

    results = asyncio.run(main())
    assert results[:3] == [0, 10, 20] and isinstance(results[3], ValueError)
    assert results[4:] == [40, 50, 60, 70, 80, 90]
    assert seen[0] == [0, 1, 2, 3] and all(len(batch) <= 4 for batch in seen)


def test_tick_batcher_failure_reaches_every_caller() -> None:
    async def flush(items: list[int]) -> list[int]:
        raise ConnectionError("down")

    async def main() -> list[int | BaseException]:
        batcher: TickBatcher[int, int] = TickBatcher(flush, max_batch=8)
        return await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)

    assert all(isinstance(r, ConnectionError) for r in asyncio.run(main()))


@pytest.mark.parametrize(
    ("forwarded", "trusted", "expected"),
    [(None, True, "9.9.9.9"), ("1.2.3.4, 5.6.7.8", True, "1.2.3.4"), ("1.2.3.4", False, "9.9.9.9"),
     (" , x", True, "unknown")],
)  # fmt: skip
def test_client_ip(forwarded: str | None, trusted: bool, expected: str) -> None:
    scope = {"client": ("9.9.9.9", 1234), "headers": []}
    assert client_ip(scope, forwarded, trusted) == expected


def test_order_headers_are_read_in_one_pass() -> None:
    headers = OrderHeaders(
        {
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"12"),
                (b"idempotency-key", b"k1"),
                (b"x-forwarded-for", b"1.1.1.1"),
            ]
        }
    )
    assert (headers.content_type, headers.content_length) == ("application/json", "12")
    assert (headers.idempotency_key, headers.forwarded_for) == ("k1", "1.1.1.1")


def test_producer_fails_a_future_past_its_deadline_as_overdue() -> None:
    """No delivery report (nothing listens; librdkafka would wait a minute): the sweep
    fails the future as overdue, which tells the gateway to leave the reservation to
    the reaper rather than release it."""
    from flashgate.errors import KafkaAckOverdue
    from flashgate.kafka.producer import KafkaProducer
    from flashgate.stack.ports import free_port

    async def scenario() -> float:
        config = {
            "bootstrap.servers": f"127.0.0.1:{free_port()}",
            "message.timeout.ms": 60_000,
            "log_level": 0,
        }
        producer = KafkaProducer(config, ack_timeout_s=0.3)
        producer.start(asyncio.get_running_loop())
        started = time.monotonic()
        try:
            with pytest.raises(KafkaAckOverdue):
                await producer.send("orders", b"{}", b"k", [])
            return time.monotonic() - started
        finally:
            await asyncio.to_thread(producer.close, 0.1)

    assert 0.3 <= asyncio.run(scenario()) < 2.0

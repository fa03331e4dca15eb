"""Hostile and broken input at the HTTP level, on a real gateway: a clear 4xx, never a 5xx.

Raw sockets send what a well-behaved client library never would: bodies over the
limit trickled slowly, huge headers, invalid UTF-8, a 10 KB Idempotency-Key.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import Iterator

import pytest

from flashgate.stack.kafka_broker import KafkaBroker
from flashgate.stack.redis_server import RedisServer
from tests.gateway_client import OPEN_RATES, Client, new_env, running_gateway
from tests.services import ServiceEnv, load_sale

VALID = {"sale_id": "bad-input", "sku": "A", "quantity": 1, "user_id": "u-1"}


@pytest.fixture(scope="module")
def env(
    kafka_broker: KafkaBroker, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceEnv]:
    env = new_env(kafka_broker, redis_server, tmp_path_factory.mktemp("bad-input"))
    for _ in running_gateway(env):
        load_sale(env, "bad-input", {"stock": {"A": 10_000}, "rates": OPEN_RATES})
        yield env


def _raw(env: ServiceEnv, request: bytes, *, trickle: float = 0.0, timeout_s: float = 20) -> bytes:
    """Send raw bytes (optionally a few at a time, slowly) and return the answer."""
    port = int(env.gateway_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        try:
            if trickle:
                for i in range(0, len(request), 512):
                    sock.sendall(request[i : i + 512])
                    time.sleep(trickle)
            else:
                sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before we finished: read its answer
        chunks = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks):
                head, _, rest = b"".join(chunks).partition(b"\r\n\r\n")
                length = _content_length(head)
                if length is not None and len(rest) >= length:
                    break
        return b"".join(chunks)


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return None


def _status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split(b" ", 2)[1])


def _post(body: bytes, *, content_type: bytes = b"application/json", extra: bytes = b"") -> bytes:
    return (
        b"POST /v1/orders HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: " + content_type
        + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n" + extra
        + b"Connection: close\r\n\r\n" + body
    )  # fmt: skip


def test_oversized_body_sent_fast_and_slowly(env: ServiceEnv) -> None:
    big = b'{"sale_id":"' + b"x" * 20_000 + b'"}'
    assert _status(_raw(env, _post(big))) == 413
    # Chunked and trickled: refused once past the limit, before the rest arrives.
    head = (
        b"POST /v1/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    chunk = b"x" * 1024
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(12)) + b"0\r\n\r\n"
    started = time.monotonic()
    answer = _raw(env, head + chunks, trickle=0.05)
    assert _status(answer) == 413
    assert b'"error":"payload_too_large"' in answer
    assert time.monotonic() - started < 15


def test_huge_headers_are_refused_cleanly(env: ServiceEnv) -> None:
    body = json.dumps(VALID).encode()
    one_huge = b"X-Junk: " + b"a" * 64_000 + b"\r\n"
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(300))
    for extra in (one_huge, many):
        answer = _raw(env, _post(body, extra=extra))
        # An empty reply is also what a crashed gateway gives: demand the exact answer.
        assert _status(answer) == 431, answer[:300]
        assert b'"error":"headers_too_large"' in answer, answer[:300]
    # And the gateway is still there for a good request.
    good = _raw(env, _post(json.dumps({**VALID, "user_id": "after-431"}).encode()))
    assert _status(good) == 202, good[:300]


def test_invalid_utf8_and_odd_encodings(env: ServiceEnv) -> None:
    for body in (
        b'{"sale_id":"\xff\xfe","sku":"A","quantity":1,"user_id":"u"}',
        b"\xef\xbb\xbf" + json.dumps(VALID).encode(),  # a BOM
        json.dumps(VALID).encode("utf-16"),
        b'{"sale_id":"a\\ud800","sku":"A","quantity":1,"user_id":"u"}',  # lone surrogate
    ):
        status = _status(_raw(env, _post(body)))
        assert status in (400, 422), (body[:40], status)


@pytest.mark.parametrize(
    "quantity", ["1e400", "-1", "0", "99999999999999999999999", "1.0", "NaN", "Infinity", "null"]
)
def test_numbers_out_of_range(env: ServiceEnv, quantity: str) -> None:
    body = b'{"sale_id":"bad-input","sku":"A","user_id":"u","quantity":' + quantity.encode() + b"}"
    assert _status(_raw(env, _post(body))) in (400, 422)


def test_duplicate_keys_and_deep_nesting_over_http(env: ServiceEnv) -> None:
    dup = b'{"sale_id":"bad-input","sku":"A","user_id":"u","quantity":1,"quantity":5}'
    answer = _raw(env, _post(dup))
    assert _status(answer) == 422
    assert b"duplicate field" in answer
    deep = b'{"attributes":' + b"[" * 3000 + b"]" * 3000 + b"}"  # under the 8 KiB limit
    assert _status(_raw(env, _post(deep))) in (400, 422)


@pytest.mark.parametrize(
    "content_type",
    [b"text/plain", b"application/x-www-form-urlencoded", b"multipart/form-data; boundary=x",
     b"application/jsonx", b"application/json\x00"],
)  # fmt: skip
def test_wrong_content_types(env: ServiceEnv, content_type: bytes) -> None:
    status = _status(_raw(env, _post(json.dumps(VALID).encode(), content_type=content_type)))
    assert status in (400, 415)


def test_a_10_kb_idempotency_key(env: ServiceEnv) -> None:
    body = json.dumps({**VALID, "user_id": f"u-{uuid.uuid4().hex[:8]}"}).encode()
    answer = _raw(env, _post(body, extra=b"Idempotency-Key: " + b"k" * 10_240 + b"\r\n"))
    assert _status(answer) == 422
    assert b"Idempotency-Key" in answer or b"idempotency" in answer.lower()


def test_per_user_limit_of_one_under_20_parallel_attempts(env: ServiceEnv) -> None:
    load_sale(env, "one-each", {"stock": {"A": 1000}, "per_user_max": 1, "rates": OPEN_RATES})

    async def attempt_all() -> list[int]:
        async with Client(env.gateway_url, connections=20) as client:
            answers = await asyncio.gather(
                *(
                    client.order(sale_id="one-each", sku="A", quantity=1, user_id="same-user")
                    for _ in range(20)
                )
            )
            return [a.status for a in answers]

    statuses = asyncio.run(attempt_all())
    assert statuses.count(202) == 1, statuses
    assert statuses.count(409) == 19, statuses

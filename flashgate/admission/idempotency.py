"""Idempotency-Key handling: the same key and body get the same answer, once.

The first request with a key claims it (`pending`) and, when done, stores its
answer (`done`) for `ttl_s`. A duplicate that arrives meanwhile waits for that
answer by polling with short sleeps, bounded by a deadline. A request that
fails in a way a retry may fix (503, 429, ...) releases its claim, so the next
request with the key starts afresh. A pending claim of a gateway that died
can be taken over after `pending_ttl_s`. The key keeps one order id for its
whole life, so a retry after an unanswered produce never makes a second order.
A request whose Kafka outcome is unknown leaves the key `unknown`: retries
answer from the order's status until it settles (see idem_unknown.lua).

Keys are scoped per storefront token ("anon" without one) and compared by a
digest of the decoded order, so formatting of the JSON does not matter.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from typing import Any, Literal

import msgspec

from flashgate.admission.batcher import TickBatcher
from flashgate.admission.errors import AdmissionUnavailable
from flashgate.admission.keys import idempotency_key
from flashgate.redis_client import RedisFailure
from flashgate.redis_scripts.loader import RedisScripts, ScriptPipeline

SCRIPTS = ("idem_begin", "idem_finish", "idem_release", "idem_unknown")
POLL_FIRST_S = 0.005
POLL_MAX_S = 0.05

State = Literal["new", "reused", "pending", "done", "unknown"]


class Claim(msgspec.Struct, frozen=True):
    """The outcome of `begin`: `new` carries the owner token needed to finish or release;
    `unknown` the order id whose Kafka outcome is not known yet (answer from its status).
    `retry`: a `new` claim whose order id is an earlier attempt's (that attempt may hold
    a reservation under it: its answer can have been lost to a failover)."""

    state: State
    key: str
    owner: str = ""
    status: int = 0
    answer: bytes = b""
    order_id: str = ""
    retry: bool = False


_CANONICAL = msgspec.json.Encoder(order="sorted")


def order_digest(order: msgspec.Struct) -> str:
    """What a key's requests are compared by: the decoded order, not its JSON text."""
    return hashlib.blake2b(_CANONICAL.encode(order), digest_size=16).hexdigest()


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


class IdempotencyStore:
    """Claims are sent in batches per event-loop tick unless `batching` is off, like
    admission itself."""

    def __init__(
        self,
        scripts: RedisScripts,
        *,
        ttl_s: int,
        pending_ttl_s: float,
        batching: bool = False,
        batch_max: int = 256,
    ) -> None:
        self._scripts = scripts
        self._ttl_ms = str(int(ttl_s * 1000))
        self._pending_ttl_ms = str(max(1, int(pending_ttl_s * 1000)))
        self._batcher: TickBatcher[tuple[str, str, str, str, str], Any] | None = (
            TickBatcher(self._begin_batch, max_batch=batch_max) if batching else None
        )

    async def _begin_batch(self, items: list[tuple[str, str, str, str, str]]) -> list[Any]:
        pipe = self._scripts.pipeline()
        for redis_key, digest, owner, order_id, retry in items:
            pipe.script(
                "idem_begin",
                [redis_key],
                [digest, owner, self._pending_ttl_ms, order_id, self._ttl_ms, retry],
            )
        try:
            replies = await pipe.execute()
        except RedisFailure as exc:
            raise AdmissionUnavailable(f"idempotency check failed: {exc}") from exc
        return [
            AdmissionUnavailable(f"idempotency check failed: {reply}")
            if isinstance(reply, BaseException)
            else reply
            for reply in replies
        ]

    async def begin(
        self, scope: str, key: str, digest: str, order_id: str, *, retry_unknown: bool = False
    ) -> Claim:
        """Claim the key; `order_id` is used if the key is new (else the key's own).

        `retry_unknown` claims a key left `unknown` (its order settled "not stored")."""
        redis_key = idempotency_key(scope, key)
        owner = os.urandom(12).hex()
        retry = "retry" if retry_unknown else ""
        try:
            if self._batcher is not None:
                reply = await self._batcher.submit((redis_key, digest, owner, order_id, retry))
            else:
                reply = await self._scripts.call(
                    "idem_begin",
                    [redis_key],
                    [digest, owner, self._pending_ttl_ms, order_id, self._ttl_ms, retry],
                )
        except RedisFailure as exc:
            raise AdmissionUnavailable(f"idempotency check failed: {exc}") from exc
        state = _bytes(reply[0]).decode()
        if state == "new":
            claimed = _bytes(reply[1]).decode()
            return Claim("new", redis_key, owner=owner, order_id=claimed, retry=claimed != order_id)
        if state == "done":
            return Claim("done", redis_key, status=int(reply[1]), answer=_bytes(reply[2]))
        if state == "unknown":
            return Claim("unknown", redis_key, order_id=_bytes(reply[1]).decode())
        return Claim(state, redis_key)  # type: ignore[arg-type]

    async def wait(
        self,
        scope: str,
        key: str,
        digest: str,
        timeout_s: float,
        order_id: str,
        *,
        retry_unknown: bool = False,
    ) -> Claim:
        """`begin` until the key is ours, reused, done or unknown; `pending` after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        pause = POLL_FIRST_S
        while True:
            claim = await self.begin(scope, key, digest, order_id, retry_unknown=retry_unknown)
            if claim.state != "pending" or time.monotonic() >= deadline:
                return claim
            await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, POLL_MAX_S)

    async def finish(self, claim: Claim, status: int, answer: bytes) -> bool:
        try:
            stored = await self._scripts.call(
                "idem_finish", [claim.key], [claim.owner, str(status), answer, self._ttl_ms]
            )
        except RedisFailure as exc:
            raise AdmissionUnavailable(f"idempotency store failed: {exc}") from exc
        return int(stored) == 1

    def add_finish(self, pipe: ScriptPipeline, claim: Claim, status: int, answer: bytes) -> None:
        """`finish` as a call on a caller's pipeline (the gateway batches it)."""
        pipe.script("idem_finish", [claim.key], [claim.owner, str(status), answer, self._ttl_ms])

    def add_unknown(self, pipe: ScriptPipeline, claim: Claim) -> None:
        """Leave the key waiting on its order's outcome (idem_unknown.lua), on a pipeline."""
        pipe.script("idem_unknown", [claim.key], [claim.owner, self._ttl_ms])

    async def aclose(self) -> None:
        if self._batcher is not None:
            await self._batcher.aclose()

    async def release(self, claim: Claim) -> None:
        try:
            await self._scripts.call("idem_release", [claim.key], [claim.owner])
        except RedisFailure as exc:
            raise AdmissionUnavailable(f"idempotency release failed: {exc}") from exc

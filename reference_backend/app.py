"""HTTP surface of the reference backend: orders, stats, health and runtime fault/capacity knobs."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import msgspec
from aiohttp import web

from reference_backend.auth import TokenCheck
from reference_backend.capacity import CapacityLimiter
from reference_backend.config import BackendConfig
from reference_backend.faults import FaultInjector, Faults
from reference_backend.store import OrderStore

__all__ = ["BACKEND_KEY", "Backend", "BackendConfig", "create_app"]

IDEMPOTENCY_HEADER = "Idempotency-Key"
_JSON = "application/json"


def _json(status: int, payload: object, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=msgspec.json.encode(payload), content_type=_JSON, headers=headers
    )


def _error(status: int, message: str) -> web.Response:
    return _json(status, {"error": message})


def _unavailable(message: str, retry_after: float) -> web.Response:
    seconds = max(1, math.ceil(retry_after))
    return _json(503, {"error": message}, headers={"Retry-After": str(seconds)})


def _same_id(body_id: object, key: str) -> bool:
    if isinstance(body_id, str):
        return body_id == key
    if isinstance(body_id, int) and not isinstance(body_id, bool):
        return str(body_id) == key
    return False


class _BadRequest(Exception):
    """An admin request body that cannot be applied; the message goes back to the caller."""


def _number(payload: Mapping[str, Any], name: str) -> float | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _BadRequest(f"{name} must be a finite number")
    if value < 0:
        raise _BadRequest(f"{name} must be >= 0")
    return float(value)


async def _admin_body(request: web.Request, allowed: frozenset[str]) -> dict[str, Any]:
    try:
        payload = msgspec.json.decode(await request.read())
    except msgspec.DecodeError as exc:
        raise _BadRequest("body is not valid JSON") from exc
    if not isinstance(payload, dict):
        raise _BadRequest("body must be a JSON object")
    unknown = sorted(set(payload) - allowed)
    if unknown:
        raise _BadRequest(f"unknown fields: {', '.join(unknown)}; allowed: {sorted(allowed)}")
    return payload


class Backend:
    """State of one backend app (store, limiter, faults) and its request handlers."""

    def __init__(
        self,
        config: BackendConfig,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = OrderStore(
            config.db_path, clock=wall_clock, batch_commits=config.commit_interval_ms > 0
        )
        self.refused_overloaded = 0
        self.limiter = CapacityLimiter(
            config.rate, config.effective_burst, config.concurrency, clock=monotonic
        )
        self.faults = FaultInjector(
            Faults(error_share=config.error_share, latency_ms=config.latency_ms),
            seed=config.seed,
            clock=monotonic,
        )
        self.max_wait = config.max_wait
        self.tokens = TokenCheck(
            static_token=config.require_token,
            client=config.oauth2_credentials,
            token_ttl_s=config.token_ttl_s,
            clock=monotonic,
        )

    # -- lifecycle -----------------------------------------------------------------------

    async def lifespan(self, _app: web.Application) -> AsyncIterator[None]:
        """Open the store and arm the configured outage at startup; close the store at exit."""
        self.store.open()
        self.faults.schedule_outage(self.config.outage_start, self.config.outage_seconds)
        if self.config.refuse_status and self.config.refuse_seconds > 0:
            self.faults.refuse(self.config.refuse_status, self.config.refuse_seconds)
        flusher: asyncio.Task[None] | None = None
        if self.config.commit_interval_ms > 0:
            flusher = asyncio.create_task(self._flush_every(self.config.commit_interval_ms / 1e3))
        try:
            yield
        finally:
            if flusher is not None:
                flusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await flusher
            self.store.close()

    async def _flush_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.store.flush()

    # -- orders ----------------------------------------------------------------------------

    async def post_order(self, request: web.Request) -> web.Response:
        unauthorized = self.tokens.refusal(request)
        if unauthorized is not None:
            return unauthorized
        refused = self.faults.refusing()
        if refused:
            return _error(refused, f"refused: injected {refused}")
        outage = self.faults.outage_remaining()
        if outage > 0:
            return _unavailable("outage", outage)
        admission = await self.limiter.acquire(self.max_wait)
        if not admission.admitted:
            self.refused_overloaded += 1
            return _unavailable("overloaded", admission.retry_after)
        try:
            latency = self.faults.latency_seconds
            if latency > 0:
                await asyncio.sleep(latency)
            return await self._store_order(request)
        finally:
            admission.release()

    async def _store_order(self, request: web.Request) -> web.Response:
        key = request.headers.get(IDEMPOTENCY_HEADER, "").strip()
        if not key:
            return _error(400, f"missing or empty {IDEMPOTENCY_HEADER} header")
        raw = await request.read()
        try:
            text = raw.decode("utf-8")
            record = msgspec.json.decode(text)
        except (UnicodeDecodeError, msgspec.DecodeError):
            return _error(400, "body is not valid JSON")
        if not isinstance(record, dict):
            return _error(400, "body must be a JSON object")
        body_id = record.get("order_id")
        if body_id is not None and not _same_id(body_id, key):
            return _error(400, f"order_id in body differs from {IDEMPOTENCY_HEADER}")
        attributes = record.get("attributes")
        reject = self.config.reject_attribute
        if reject and isinstance(attributes, dict) and reject in attributes:
            return _error(422, f"order carries attribute {reject!r}: refused")
        if self.faults.should_fail():
            return _error(500, "injected failure")
        if self.store.put(key, text):
            return _json(201, {"order_id": key, "stored": True})
        return _json(200, {"order_id": key, "duplicate": True})

    async def get_order(self, request: web.Request) -> web.Response:
        unauthorized = self.tokens.refusal(request)
        if unauthorized is not None:
            return unauthorized
        outage = self.faults.outage_remaining()
        if outage > 0:
            return _unavailable("outage", outage)
        order_id = request.match_info["order_id"]
        stored = self.store.get(order_id)
        if stored is None:
            return _json(404, {"error": "not found", "order_id": order_id})
        record: dict[str, Any] = msgspec.json.decode(stored.body)
        record.setdefault("order_id", stored.order_id)
        record["stored_at"] = stored.stored_at
        return _json(200, record)

    # -- observability ---------------------------------------------------------------------

    async def get_stats(self, _request: web.Request) -> web.Response:
        stats = self.store.stats()
        per_second = {str(second): count for second, count in sorted(stats.per_second.items())}
        return _json(
            200,
            {
                "orders": stats.orders,
                "duplicates": stats.duplicates,
                "per_second": per_second,
                "tokens_issued": self.tokens.issued_total,
                # 503s for want of capacity since start: what a benchmark's drain
                # would have had to retry.
                "refused_overloaded": self.refused_overloaded,
            },
        )

    async def healthz(self, _request: web.Request) -> web.Response:
        outage = self.faults.outage_remaining()
        if outage > 0:
            return _unavailable("outage", outage)
        return _json(200, {"status": "ok"})

    # -- admin -----------------------------------------------------------------------------

    def _capacity_snapshot(self) -> dict[str, float]:
        bucket = self.limiter.bucket
        return {
            "rate": bucket.rate,
            "burst": bucket.burst,
            "concurrency": self.limiter.concurrency,
            "max_wait": self.max_wait,
        }

    async def get_faults(self, _request: web.Request) -> web.Response:
        return _json(200, self.faults.snapshot())

    async def put_faults(self, request: web.Request) -> web.Response:
        try:
            payload = await _admin_body(
                request,
                frozenset(
                    {
                        "error_share",
                        "latency_ms",
                        "outage_seconds",
                        "refuse_status",
                        "refuse_seconds",
                    }
                ),
            )
            refuse_status = _number(payload, "refuse_status")
            if refuse_status is not None:
                if not refuse_status.is_integer():
                    raise _BadRequest("refuse_status must be a whole number")
                try:
                    self.faults.refuse(int(refuse_status), _number(payload, "refuse_seconds") or 0)
                except ValueError as exc:
                    raise _BadRequest(str(exc)) from exc
            error_share = _number(payload, "error_share")
            if error_share is not None and error_share > 1:
                raise _BadRequest("error_share must be in 0..1")
            self.faults.update(
                error_share=error_share,
                latency_ms=_number(payload, "latency_ms"),
                outage_seconds=_number(payload, "outage_seconds"),
            )
        except _BadRequest as exc:
            return _error(400, str(exc))
        return _json(200, self.faults.snapshot())

    async def get_capacity(self, _request: web.Request) -> web.Response:
        return _json(200, self._capacity_snapshot())

    async def put_capacity(self, request: web.Request) -> web.Response:
        try:
            payload = await _admin_body(
                request, frozenset({"rate", "burst", "concurrency", "max_wait"})
            )
            rate = _number(payload, "rate")
            burst = _number(payload, "burst")
            concurrency = _number(payload, "concurrency")
            max_wait = _number(payload, "max_wait")
            if burst is not None and burst < 1:
                raise _BadRequest("burst must be >= 1")
            if concurrency is not None and not concurrency.is_integer():
                raise _BadRequest("concurrency must be a whole number")
        except _BadRequest as exc:
            return _error(400, str(exc))
        self.limiter.configure(
            rate=rate,
            burst=burst,
            concurrency=None if concurrency is None else int(concurrency),
        )
        if max_wait is not None:
            self.max_wait = max_wait
        return _json(200, self._capacity_snapshot())


BACKEND_KEY = web.AppKey("reference_backend", Backend)


def create_app(
    config: BackendConfig,
    *,
    monotonic: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
) -> web.Application:
    """Build the backend app; the store opens on startup and closes on cleanup.

    ``monotonic`` drives capacity and outage timing, ``wall_clock`` the stored timestamps;
    both exist so tests can pin time.
    """
    backend = Backend(config, monotonic=monotonic, wall_clock=wall_clock)
    app = web.Application()
    app[BACKEND_KEY] = backend
    app.cleanup_ctx.append(backend.lifespan)
    app.add_routes(
        [
            web.post("/orders", backend.post_order),
            web.post("/oauth/token", backend.tokens.token_endpoint),
            web.get("/orders/{order_id}", backend.get_order),
            web.get("/stats", backend.get_stats),
            web.get("/healthz", backend.healthz),
            web.get("/admin/faults", backend.get_faults),
            web.put("/admin/faults", backend.put_faults),
            web.get("/admin/capacity", backend.get_capacity),
            web.put("/admin/capacity", backend.put_capacity),
        ]
    )
    return app

"""Compose the gateway's public ASGI app: middleware in order, routes, and the lifespan
that owns every client.

Middleware, outermost first: CORS (when configured), metrics (count every answer),
the header limit, load shedding (loop lag and the in-flight cap), storefront auth.
The app is pure ASGI: nothing here knows which server runs it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route

from flashgate import order_status
from flashgate.admission import admitter as admitter_module
from flashgate.admission import idempotency as idempotency_module
from flashgate.admission.admitter import Admitter
from flashgate.admission.idempotency import IdempotencyStore
from flashgate.admission.sales import SaleStore
from flashgate.kafka.config import producer_config
from flashgate.kafka.producer import ACK_GRACE_S, KafkaProducer
from flashgate.order_status import OrderStatusStore
from flashgate.redis_client import RedisClient, create_redis, describe
from flashgate.redis_scripts.loader import RedisScripts, Replication
from flashgate.settings import RedisSettings, Settings
from flashgate.task_cancel import cancel_and_wait
from gateway.auth import BearerAuth
from gateway.backlog_guard import BacklogGuard
from gateway.context import GatewayContext
from gateway.drain_metrics import DrainGauges
from gateway.header_limit import HeaderLimit
from gateway.health import ReadinessProbe, healthz, readyz
from gateway.loop_lag import LoopLag
from gateway.metrics import GatewayMetrics, MetricsMiddleware, metrics_endpoint
from gateway.openapi import openapi_endpoint
from gateway.order_status_api import get_order
from gateway.orders import CreateOrder
from gateway.problems import ApiError, api_error_handler, http_error_handler, internal_error_handler
from gateway.reaper import Reaper, reap_forever
from gateway.settle import Settler
from gateway.shed_policy import ShedPolicy
from gateway.shedding import LoadShedder, ShedCounts
from gateway.shopper_tokens import ShopperTokens
from gateway.soldout import SoldOutCache
from gateway.status_page import order_page, order_script

log = logging.getLogger(__name__)

PRODUCER_FLUSH_S = 10.0
REAPER_STOP_S = 5.0
# message.timeout.ms bounds every delivery report; this is the belt to its braces.
# At start, how long to wait for Kafka to answer or refuse before serving anyway.
FIRST_ANSWER_WAIT_S = 3.0


def create_gateway_redis(settings: RedisSettings) -> RedisClient:
    # No automatic retries: a retried admission or confirm after a timeout could
    # apply twice. A failed call is a 503 and the storefront retries instead.
    return create_redis(settings, retries=False)


def create_app(settings: Settings, *, sold_out: SoldOutCache | None = None) -> Starlette:
    """The public API. `sold_out` is shared with the admin listener of the same process."""
    metrics = GatewayMetrics()
    drain_gauges = DrainGauges(settings)
    metrics.registry.register(drain_gauges)
    sold_out_cache = sold_out or SoldOutCache(settings.gateway.sold_out_cache_ms / 1000)
    shed_lag_s = settings.gateway.shed_lag_ms / 1000
    shed_policy = ShedPolicy(shed_lag_s) if shed_lag_s > 0 else None
    # Measured even with shedding off: the lag is what an operator tunes the target by.
    loop_lag = LoopLag(shed_policy.observe if shed_policy else lambda lag_s, now_s: None)
    shed_counts = ShedCounts()
    metrics.watch_shedding(shed_counts, loop_lag, shed_policy)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        gateway = settings.gateway
        producer = KafkaProducer(
            producer_config(settings.kafka, f"gateway-{os.getpid()}"),
            ack_timeout_s=gateway.produce_timeout_ms / 1000 + ACK_GRACE_S,
        )
        producer.start(asyncio.get_running_loop())
        loop_lag.start(asyncio.get_running_loop())
        await producer.wait_first_answer(FIRST_ANSWER_WAIT_S)
        redis = create_gateway_redis(settings.redis)
        scripts = RedisScripts(
            redis, (*admitter_module.SCRIPTS, *idempotency_module.SCRIPTS, *order_status.SCRIPTS)
        )
        log.info("admission state in %s", describe(settings.redis))
        admitter = Admitter(
            scripts,
            reservation_ttl_ms=gateway.reservation_ttl_s * 1000,
            settled_keep_ms=settings.settled_keep_ms,
            batching=gateway.admission_batching,
            batch_max=gateway.admission_batch_max,
            observe_batch=metrics.batch_size.observe,
            observe_seconds=metrics.admit_seconds.observe,
            wait=Replication(settings.redis.wait_replicas, settings.redis.wait_timeout_ms),
        )
        # A pending claim outlives the longest a request can take, no longer.
        idempotency = IdempotencyStore(
            scripts,
            ttl_s=gateway.idempotency_ttl_s,
            pending_ttl_s=gateway.produce_timeout_ms / 1000 + 5.0,
            batching=gateway.admission_batching,
            batch_max=gateway.admission_batch_max,
        )
        statuses = OrderStatusStore(redis, settings.redis.order_status_ttl_s)
        settler = Settler(
            scripts,
            admitter,
            statuses,
            idempotency,
            sold_out_cache,
            batching=gateway.admission_batching,
            batch_max=gateway.admission_batch_max,
            observe_seconds=metrics.settle_seconds.observe,
            observe_ack_seconds=metrics.produce_seconds.observe,
        )
        metrics.count_fenced_acks(lambda: settler.fenced)
        context = GatewayContext(
            settings=settings,
            producer=producer,
            redis=redis,
            statuses=statuses,
            admitter=admitter,
            idempotency=idempotency,
            settler=settler,
            sold_out=sold_out_cache,
            metrics=metrics,
            guard=BacklogGuard(redis, settings),
        )
        app.state.context = context
        app.state.readiness = ReadinessProbe(context)
        reaper = Reaper.on_kafka(
            admitter,
            SaleStore(scripts),
            statuses,
            settings.kafka,
            reservation_ttl_ms=gateway.reservation_ttl_s * 1000,
            produce_timeout_ms=max(gateway.produce_timeout_ms, settings.kafka.message_timeout_ms),
        )
        reaping = asyncio.get_running_loop().create_task(
            reap_forever(reaper, gateway.reaper_interval_s)
        )
        try:
            yield
        finally:
            # Cancelled until it ends: on Python 3.11 a cancel that lands as a Redis call
            # returns can be lost (docs/FACTS.md), and the loop would run on.
            if await cancel_and_wait([reaping], REAPER_STOP_S):
                log.error("the reaper did not stop within %g s", REAPER_STOP_S)
            # In-flight requests have finished by now (the server drained them):
            # settle what is pending, then flush whatever librdkafka still holds.
            await settler.aclose()
            await admitter.aclose()
            await idempotency.aclose()
            remaining = await asyncio.to_thread(producer.close, PRODUCER_FLUSH_S)
            if remaining:
                log.error("%d records still undelivered at shutdown", remaining)
            await redis.aclose()
            loop_lag.stop()

    app = Starlette(
        routes=[
            Route("/v1/orders", CreateOrder(), methods=["POST"]),
            Route("/v1/orders/{order_id}", get_order, methods=["GET"]),
            Route("/orders/{order_id}", order_page, methods=["GET"]),
            Route("/order-status.js", order_script, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/openapi.json", openapi_endpoint, methods=["GET"]),
        ],
        middleware=[
            *cors(settings.gateway.cors_origins),
            Middleware(MetricsMiddleware, metrics=metrics),
            Middleware(HeaderLimit),
            Middleware(
                LoadShedder,
                limit=settings.gateway.in_flight_max,
                policy=shed_policy,
                counts=shed_counts,
                retry_after_s=settings.gateway.shed_retry_after_s,
            ),
            Middleware(
                BearerAuth,
                tokens=settings.gateway.storefront_tokens,
                prefix="/v1/",
                shoppers=(
                    ShopperTokens(settings.gateway.shopper_token_secrets)
                    if settings.gateway.shopper_token_secrets
                    else None
                ),
            ),
        ],
        exception_handlers={
            ApiError: api_error_handler,
            HTTPException: http_error_handler,
            Exception: internal_error_handler,
        },
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.drain_gauges = drain_gauges
    return app


def cors(origins: list[str]) -> list[Middleware]:
    """CORS for pages of `origins` calling the public API (shopper tokens in browsers);
    outermost, so a preflight is answered before authentication."""
    if not origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
            expose_headers=[
                "Location",
                "Retry-After",
                "RateLimit",
                "RateLimit-Policy",
                "Idempotent-Replayed",
            ],
            max_age=600,
        )
    ]

"""Compose the gateway's ASGI app: routes, error handlers and the lifespan that owns clients."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import Route

from flashgate.kafka.config import producer_config
from flashgate.kafka.producer import AsyncProducer
from flashgate.order_status import OrderStatusStore
from flashgate.redis_client import create_redis
from flashgate.settings import Settings
from gateway.context import GatewayContext
from gateway.health import ReadinessProbe, healthz, readyz
from gateway.orders import create_order, get_order
from gateway.problems import ApiError, api_error_handler

log = logging.getLogger(__name__)

PRODUCER_FLUSH_S = 10.0


def create_app(settings: Settings) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        producer = AsyncProducer(producer_config(settings.kafka, f"gateway-{os.getpid()}"))
        redis = create_redis(settings.redis)
        context = GatewayContext(
            settings=settings,
            producer=producer,
            redis=redis,
            statuses=OrderStatusStore(redis, settings.redis.order_status_ttl_s),
        )
        app.state.context = context
        app.state.readiness = ReadinessProbe(context)
        try:
            yield
        finally:
            # In-flight requests have finished by now (the server drained them):
            # flush whatever librdkafka still holds before the process goes.
            remaining = await asyncio.to_thread(producer.close, PRODUCER_FLUSH_S)
            if remaining:
                log.error("%d records still undelivered at shutdown", remaining)
            await redis.aclose()

    return Starlette(
        routes=[
            Route("/v1/orders", create_order, methods=["POST"]),
            Route("/v1/orders/{order_id}", get_order, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ],
        exception_handlers={ApiError: api_error_handler},
        lifespan=lifespan,
    )

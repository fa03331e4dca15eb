"""The admin listener's ASGI app: every route requires the admin bearer token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from flashgate.admission import admitter as admitter_module
from flashgate.admission.sales import SaleStore
from flashgate.drain.control import DrainControl
from flashgate.kafka.topics import TopicSizer
from flashgate.ops.page import PAGE_DIR
from flashgate.redis_client import create_redis
from flashgate.redis_scripts.loader import RedisScripts
from flashgate.settings import Settings
from gateway.admin.drain import get_drain, put_drain
from gateway.admin.overview import get_overview
from gateway.admin.sales import get_sale, put_sale
from gateway.auth import BearerAuth
from gateway.problems import ApiError, api_error_handler, http_error_handler, internal_error_handler
from gateway.soldout import SoldOutCache


def create_admin_app(settings: Settings, token: str, sold_out: SoldOutCache) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # With retries, unlike the public API's client: every admin write is idempotent
        # (a sale is loaded as totals, the drain override is set, not added), so a call
        # retried on a connection a failover closed is safe, and the admin API answers
        # again as soon as Redis does instead of failing once per pooled connection.
        redis = create_redis(settings.redis)
        app.state.redis = redis
        app.state.sales = SaleStore(RedisScripts(redis, admitter_module.SCRIPTS))
        app.state.drain_control = DrainControl(redis, settings.drain.group_id)
        app.state.topic_sizer = TopicSizer(settings.kafka)
        try:
            yield
        finally:
            app.state.topic_sizer.close()
            await redis.aclose()

    app = Starlette(
        routes=[
            Route("/admin/v1/sales/{sale_id}", put_sale, methods=["PUT"]),
            Route("/admin/v1/sales/{sale_id}", get_sale, methods=["GET"]),
            Route("/admin/v1/drain", get_drain, methods=["GET"]),
            Route("/admin/v1/drain", put_drain, methods=["PUT"]),
            Route("/admin/v1/overview", get_overview, methods=["GET"]),
            # The live ops page: static files only; it sends the token with every API call.
            Mount("/ops", StaticFiles(directory=PAGE_DIR, html=True), name="ops"),
        ],
        middleware=[
            Middleware(BearerAuth, tokens=[token], prefix="/", required=True, exempt=["/ops/"])
        ],
        exception_handlers={
            ApiError: api_error_handler,
            HTTPException: http_error_handler,
            Exception: internal_error_handler,
        },
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.sold_out = sold_out
    return app

"""`GET /admin/v1/overview`: everything the live ops page shows, in one call.

The drain state (as `GET /admin/v1/drain`), totals accepted into and drained
from the orders topic (the page derives per-second rates from their change),
stock left per sale and SKU, and the number of dead letters.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from flashgate.admission.errors import AdmissionUnavailable
from flashgate.admission.sales import SaleStore
from flashgate.drain import progress
from flashgate.kafka.topics import TopicSizer
from flashgate.redis_client import RedisFailure
from flashgate.settings import Settings
from gateway.admin.drain import drain_state
from gateway.problems import json_response, unavailable


async def get_overview(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    sales: SaleStore = request.app.state.sales
    sizer: TopicSizer = request.app.state.topic_sizer
    try:
        drain = await drain_state(request)
        state = await progress.read(request.app.state.redis, settings.drain.group_id)
        stock: dict[str, Any] = {}
        for sale_id in await sales.sale_ids():
            report = await sales.report(sale_id)
            if report is not None:
                stock[sale_id] = {
                    "stock": {sku: r.remaining for sku, r in report.skus.items()},
                    "accepted_orders": report.accepted_orders,
                    "delivered_orders": report.delivered_orders,
                    "state": report.state,
                    "seconds_to_open": report.seconds_to_open,
                    "seconds_to_close": report.seconds_to_close,
                }
    except (*RedisFailure, AdmissionUnavailable):
        raise unavailable("Redis is unavailable") from None
    dlq = await asyncio.to_thread(sizer.records, settings.kafka.dlq_topic)
    return json_response(
        {
            "at": time.time(),
            "drain": drain,
            "accepted_total": sum(state.end_offsets.values()) if state else 0,
            "delivered_total": sum(state.committed.values()) if state else 0,
            "sales": stock,
            "dlq": dlq,
        }
    )

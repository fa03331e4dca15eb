"""`PUT` and `GET /admin/v1/sales/{sale_id}`: load a sale, report on it."""

from __future__ import annotations

import re

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from flashgate.admission.errors import AdmissionUnavailable
from flashgate.admission.sales import SaleDefinition, SaleStore
from flashgate.settings import Settings
from gateway.admin.audit import audit
from gateway.admin.errors import decode_body
from gateway.body import read_limited_body
from gateway.problems import ApiError, json_response, unavailable
from gateway.soldout import SoldOutCache
from gateway.worker_peers import PeerMetrics

ADMIN_BODY_MAX = 1024 * 1024
_SALE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_decoder = msgspec.json.Decoder(SaleDefinition)


def _sale_id(request: Request) -> str:
    sale_id: str = request.path_params["sale_id"]
    if not _SALE_ID.fullmatch(sale_id):
        raise ApiError(
            422,
            "validation_error",
            "invalid sale id",
            extra={"details": [{"field": "sale_id", "error": "1 to 64 of [A-Za-z0-9._:-]"}]},
        )
    return sale_id


async def put_sale(request: Request) -> Response:
    sale_id = _sale_id(request)
    definition = decode_body(await read_limited_body(request, ADMIN_BODY_MAX), _decoder)
    settings: Settings = request.app.state.settings
    sales: SaleStore = request.app.state.sales
    try:
        config = await sales.load(sale_id, definition, settings.sales)
        report = await sales.report(sale_id)
    except AdmissionUnavailable:
        raise unavailable("Redis is unavailable; the sale was not loaded") from None
    sold_out: SoldOutCache = request.app.state.sold_out
    sold_out.forget(sale_id)
    peers: PeerMetrics | None = getattr(request.app.state, "peers", None)
    if peers is not None:
        await peers.forget_sold_out(sale_id)
    audit(
        request,
        f"PUT /admin/v1/sales/{sale_id}",
        f"skus={len(definition.stock)} units={sum(definition.stock.values())} "
        f"per_order_max={config.per_order_max} per_user_max={config.per_user_max} "
        f"rates={config.as_rates()}",
    )
    return json_response(report)


async def get_sale(request: Request) -> Response:
    sale_id = _sale_id(request)
    sales: SaleStore = request.app.state.sales
    try:
        report = await sales.report(sale_id)
    except AdmissionUnavailable:
        raise unavailable("Redis is unavailable") from None
    if report is None:
        raise ApiError(404, "unknown_sale", f"sale {sale_id!r} is not loaded")
    return json_response(report)

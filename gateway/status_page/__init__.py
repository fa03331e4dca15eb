"""The shoppers' order status page: `GET /orders/{order_id}` (HTML) and the script behind
it, `GET /order-status.js`, which a storefront can also embed in its own pages.

Neither holds any data: the script reads `GET /v1/orders/{order_id}` (with the
shopper's token, when the gateway wants one) and keeps the page current until the
order is delivered or failed. A few KB, no framework, readable on a phone.
"""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

from flashgate.ids import is_order_id
from gateway.problems import ApiError

_FILES = resources.files(__name__)
_PAGE = (_FILES / "order.html").read_text()
_SCRIPT = (_FILES / "order-status.js").read_bytes()
# The page and script change only with a new gateway version.
_CACHE = {"Cache-Control": "public, max-age=300"}


async def order_page(request: Request) -> Response:
    order_id = request.path_params["order_id"]
    if not is_order_id(order_id):  # only a ULID is ever written into the page
        raise ApiError(404, "not_found", "no such order")
    return Response(_PAGE.replace("{order_id}", order_id), 200, _CACHE, "text/html; charset=utf-8")


async def order_script(request: Request) -> Response:
    return Response(_SCRIPT, 200, _CACHE, "text/javascript; charset=utf-8")

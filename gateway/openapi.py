"""The OpenAPI 3.1 document of the public API, served at `/openapi.json`.

The order schema is generated from the msgspec struct that validates requests,
so it cannot drift; the rest is written here and checked against the app's
routes and real answers by tests/test_gateway_openapi.py.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from flashgate.order import OrderRequest

ERROR_CODES = {
    400: ["invalid_json"],
    401: ["unauthorized", "invalid_shopper_token"],
    404: ["unknown_sale", "not_found"],
    409: ["sold_out", "purchase_limit", "sale_not_open"],
    410: ["sale_closed"],
    413: ["payload_too_large"],
    415: ["unsupported_media_type"],
    431: ["headers_too_large"],
    422: ["validation_error", "idempotency_key_reused"],
    429: ["rate_limited"],
    503: ["unavailable", "outcome_unknown", "backlog_full"],
}
_DESCRIPTIONS = {
    400: "The body is not JSON.",
    401: "`unauthorized`: storefront (or shopper) tokens are configured and the bearer "
    "token is missing or wrong; `invalid_shopper_token`: the shopper token is expired, "
    "not signed by an active secret, or the order's user_id and sale_id are not its own.",
    404: "The sale or SKU has no stock loaded.",
    409: "`sold_out`: not enough stock left; `purchase_limit`: the user reached the limit; "
    "`sale_not_open`: the sale opens at `opens_at` (in the body), `Retry-After` seconds "
    "from now by Redis's clock (never replayed for an Idempotency-Key).",
    410: "`sale_closed`: the sale closed at `closes_at` (in the body).",
    413: "The body is larger than the limit (checked while reading).",
    415: "Content-Type is not application/json.",
    431: "The request headers are larger than 16 KiB.",
    422: "The order violates the schema (`details` lists each field), or the "
    "Idempotency-Key was used with another body.",
    429: "Rate limited (sale, user or client IP).",
    503: "`unavailable`: Kafka refused the order, admission is unavailable, or the "
    "gateway is shedding a crowd (its event loop runs late, or it is at its in-flight "
    "cap; answered before the body is read, `Retry-After` 1-3 s drawn per answer); "
    "nothing was reserved; retry after `Retry-After` seconds. "
    "`outcome_unknown`: Kafka's answer for this order is unknown (timed out in flight); "
    "the body carries `order_id` and `status_url`, the units stay reserved, and the "
    "status settles to `accepted` or `failed` (`not_stored`); a retry with the same "
    "Idempotency-Key gets the settled answer (the same 503 while pending). "
    "`backlog_full`: the drain would deliver an order admitted now later than the "
    "buffer holds it safely (retention minus `buffer_safety_s`, or the sale's "
    "`deliver_within_s`); nothing was reserved; `Retry-After` is when it would fit, "
    "from the drain's schedule.",
}


def _error(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _DESCRIPTIONS[status],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if status in (409, 429, 503):
        response["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
    if status == 429:
        response["headers"]["RateLimit-Policy"] = {"schema": {"type": "string"}}
        response["headers"]["RateLimit"] = {"schema": {"type": "string"}}
    return response


def _json(ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


def build_openapi() -> dict[str, Any]:
    (order_schema,), components = msgspec.json.schema_components(
        [OrderRequest], ref_template="#/components/schemas/{name}"
    )
    components.update(
        {
            "Accepted": {
                "type": "object",
                "required": ["order_id", "status", "status_url"],
                "properties": {
                    "order_id": {"type": "string", "description": "ULID, 26 characters"},
                    "status": {"const": "accepted"},
                    "status_url": {"type": "string"},
                },
            },
            "OrderStatus": {
                "type": "object",
                "required": ["order_id", "status", "accepted_at"],
                "properties": {
                    "order_id": {"type": "string"},
                    "status": {
                        "enum": ["pending", "accepted", "delivered", "failed"],
                        "description": "pending: Kafka's answer was unknown, not settled yet",
                    },
                    "accepted_at": {"type": "number", "description": "Unix time, seconds"},
                    "delivered_at": {"type": "number"},
                    "reason": {
                        "type": "string",
                        "description": "why it failed; `not_stored`: its record was proven "
                        "absent from Kafka and its units returned (never delivered); "
                        "`expired_in_buffer`: Kafka's retention deleted its record before "
                        "the drain delivered it",
                    },
                    "position": {
                        "type": "integer",
                        "description": "orders ahead of it in the drain (approximate)",
                    },
                    "eta_seconds": {"type": "number"},
                },
            },
            "Error": {
                "type": "object",
                "required": ["error", "message"],
                "properties": {
                    "error": {"enum": sorted({c for codes in ERROR_CODES.values() for c in codes})},
                    "message": {"type": "string"},
                    "order_id": {"type": "string", "description": "outcome_unknown"},
                    "status_url": {"type": "string", "description": "outcome_unknown"},
                    "details": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["field", "error"],
                            "properties": {
                                "field": {"type": "string"},
                                "error": {"type": "string"},
                            },
                        },
                    },
                },
            },
        }
    )
    post_responses: dict[str, Any] = {
        "202": {
            **_json("Accepted", "Accepted: durable in Kafka (acks=all)."),
            "headers": {
                "Location": {"schema": {"type": "string"}},
                "Idempotent-Replayed": {
                    "schema": {"const": "true"},
                    "description": "present when this is a replay of an earlier answer",
                },
            },
        }
    }
    post_responses.update({str(status): _error(status) for status in ERROR_CODES})
    get_responses: dict[str, Any] = {
        "200": _json("OrderStatus", "The order's status."),
        "401": _error(401),
        "404": _error(404),
        "503": _error(503),
    }
    plain = {"content": {"application/json": {"schema": {"type": "object"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "flashgate gateway", "version": "1"},
        "components": {
            "schemas": components,
            "securitySchemes": {"storefront": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"storefront": []}],
        "paths": {
            "/v1/orders": {
                "post": {
                    "summary": "Place an order",
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "schema": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": 128,
                                "pattern": "^[!-~]+$",
                            },
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": order_schema}},
                    },
                    "responses": post_responses,
                }
            },
            "/v1/orders/{order_id}": {
                "get": {
                    "summary": "An order's status",
                    "parameters": [
                        {
                            "name": "order_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": get_responses,
                }
            },
            "/orders/{order_id}": {
                "get": {
                    "summary": "The shopper's order status page (HTML; its data comes from "
                    "GET /v1/orders/{order_id}, with `#token=` from the URL for shopper tokens)",
                    "parameters": [
                        {
                            "name": "order_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "the page",
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        },
                        "404": _json("Error", "not an order id"),
                    },
                }
            },
            "/order-status.js": {
                "get": {
                    "summary": "The status page's script, for storefronts to embed",
                    "responses": {
                        "200": {
                            "description": "JavaScript",
                            "content": {"text/javascript": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Process alive",
                    "responses": {"200": {"description": "ok", **plain}},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Kafka and Redis reachable",
                    "responses": {
                        "200": {"description": "ready", **plain},
                        "503": {"description": "not ready", **plain},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": {"description": "OpenAPI", **plain}},
                }
            },
        },
    }


async def openapi_endpoint(request: Request) -> Response:
    document = getattr(request.app.state, "openapi", None)
    if document is None:
        document = msgspec.json.encode(build_openapi())
        request.app.state.openapi = document
    return Response(document, media_type="application/json")

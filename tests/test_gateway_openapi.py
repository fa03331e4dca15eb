"""The OpenAPI document stays true: same routes and methods as the app, the contract's
status table, the order schema the validator uses, and the error codes the code raises."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
from starlette.routing import Route

from flashgate.order import OrderRequest
from flashgate.settings import load_settings
from gateway.app import create_app
from gateway.openapi import ERROR_CODES, build_openapi

GATEWAY = Path(__file__).resolve().parent.parent / "gateway"
# The status table of POST /v1/orders (README, which docs/ARCHITECTURE.md points to),
# 431 for oversized headers included.
CONTRACT_STATUSES = {202, 400, 401, 404, 409, 410, 413, 415, 422, 429, 431, 503}


def _openapi_path(path: str) -> str:
    return path  # Starlette's `{name}` placeholders are OpenAPI's too


def test_paths_and_methods_match_the_app() -> None:
    app = create_app(load_settings(environ={}))
    routes: dict[str, set[str]] = {}
    for route in app.routes:
        assert isinstance(route, Route)
        methods = {m.lower() for m in (route.methods or set())} - {"head"}
        routes.setdefault(_openapi_path(route.path), set()).update(methods)
    document = build_openapi()
    assert {path: set(item) for path, item in document["paths"].items()} == routes


def test_post_orders_lists_the_contracts_statuses() -> None:
    responses = build_openapi()["paths"]["/v1/orders"]["post"]["responses"]
    assert {int(code) for code in responses} == CONTRACT_STATUSES


def test_order_schema_is_the_validators() -> None:
    document = build_openapi()
    body = document["paths"]["/v1/orders"]["post"]["requestBody"]["content"]["application/json"]
    ref = body["schema"]["$ref"].rsplit("/", 1)[1]
    schema = document["components"]["schemas"][ref]
    _, components = msgspec.json.schema_components([OrderRequest])
    assert schema == components[ref]
    assert set(schema["required"]) == {"sale_id", "sku", "quantity", "user_id"}
    assert schema.get("additionalProperties") is False


def test_every_error_code_raised_by_the_gateway_is_documented() -> None:
    source = "\n".join(p.read_text() for p in GATEWAY.glob("*.py"))
    raised = set(re.findall(r"ApiError\(\s*(\d{3}),\s*\"([a-z_]+)\"", source))
    raised |= {(503, "unavailable")}  # via problems.unavailable()
    public = {(int(status), code) for status, code in raised if code != "internal_error"}
    documented = {(status, code) for status, codes in ERROR_CODES.items() for code in codes}
    assert public <= documented, public - documented
    assert {code for _, code in documented} >= {
        "invalid_json", "unauthorized", "unknown_sale", "sold_out", "purchase_limit",
        "payload_too_large", "unsupported_media_type", "validation_error",
        "idempotency_key_reused", "rate_limited", "unavailable",
    }  # fmt: skip


def test_document_is_json_serialisable_and_openapi_31() -> None:
    document = msgspec.json.decode(msgspec.json.encode(build_openapi()))
    assert document["openapi"] == "3.1.0"
    assert "Idempotency-Key" in {
        p["name"] for p in document["paths"]["/v1/orders"]["post"]["parameters"]
    }

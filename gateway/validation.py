"""Turn a request body into an `OrderRequest`, or into the contract's 400/422 errors.

The fast path is one msgspec decode. msgspec stops at the first problem, so on
failure a second, slower pass checks each field on its own to list every
field that is wrong: a storefront developer fixes them all in one go.

Duplicate keys are refused (422): JSON parsers disagree on which copy wins, and
an order must mean the same thing to the gateway, the backend and any proxy in
between. msgspec keeps the last copy silently, so a cheap byte count decides
whether the body needs the stdlib parser's exact check (most bodies do not).
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from flashgate.order import OrderRequest, decode_request
from gateway.problems import ApiError

_FIELDS = msgspec.structs.fields(OrderRequest)
_FIELD_TYPES: dict[str, Any] = {field.name: field.type for field in _FIELDS}
_REQUIRED = {field.name for field in _FIELDS if field.required}
_QUOTED_NAMES = [f'"{name}"'.encode() for name in _FIELD_TYPES]


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


def _may_repeat_a_key(body: bytes, order: OrderRequest) -> bool:
    """False only when no key can occur twice: the cheap test that spares most bodies
    the stdlib parse. Without a backslash every key is written exactly as its quoted
    text, so a repeated key would make that text occur twice; a value that happens to
    equal a key only sends the body the slow, exact way."""
    if b"\\" in body:  # an escaped key ("sale\u005fid") may repeat another
        return True
    if any(body.count(name) > 1 for name in _QUOTED_NAMES):
        return True
    return any(body.count(b'"%s"' % key.encode()) > 1 for key in order.attributes)


def _check_duplicates(body: bytes, order: OrderRequest) -> None:
    if not _may_repeat_a_key(body, order):
        return
    try:
        json.loads(body, object_pairs_hook=_refuse_duplicates)
    except _DuplicateKey as exc:
        raise ApiError(
            422,
            "validation_error",
            "the order does not match the schema",
            extra={"details": [{"field": exc.key, "error": "duplicate field"}]},
        ) from None


def parse_order(body: bytes) -> OrderRequest:
    try:
        order = decode_request(body)
    except msgspec.ValidationError:
        pass
    except (msgspec.DecodeError, UnicodeDecodeError):
        # msgspec raises UnicodeDecodeError (not a DecodeError) for invalid UTF-8 in strings.
        raise ApiError(400, "invalid_json", "request body is not valid UTF-8 JSON") from None
    else:
        _check_duplicates(body, order)
        return order
    try:
        document = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json", "request body is not valid UTF-8 JSON") from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "request body is nested too deeply") from None
    raise ApiError(
        422,
        "validation_error",
        "the order does not match the schema",
        extra={"details": field_errors(document)},
    )


def field_errors(document: Any) -> list[dict[str, str]]:
    """Every schema violation of a decoded JSON document, one entry per field."""
    if not isinstance(document, dict):
        return [{"field": "$", "error": "the body must be a JSON object"}]
    details: list[dict[str, str]] = []
    for name in sorted(set(document) - set(_FIELD_TYPES)):
        details.append({"field": str(name), "error": "unknown field"})
    for name, field_type in _FIELD_TYPES.items():
        if name not in document:
            if name in _REQUIRED:
                details.append({"field": name, "error": "required"})
            continue
        try:
            msgspec.convert(document[name], field_type)
        except msgspec.ValidationError as exc:
            details.append({"field": name, "error": _strip_path(str(exc))})
    return details or [{"field": "$", "error": "invalid order"}]


def _strip_path(message: str) -> str:
    # msgspec appends " - at `$...`"; the field name is already in "field".
    return message.split(" - at `", 1)[0]

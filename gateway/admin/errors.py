"""Turn a msgspec decoding failure of an admin body into the contract's 400/422."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from gateway.problems import ApiError

T = TypeVar("T")


def decode_body(body: bytes, decoder: msgspec.json.Decoder[T]) -> T:
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        message, _, path = str(exc).partition(" - at `")
        details: list[dict[str, Any]] = [{"field": path.rstrip("`") or "$", "error": message}]
        raise ApiError(
            422,
            "validation_error",
            "the body does not match the schema",
            extra={"details": details},
        ) from None
    except msgspec.DecodeError:
        raise ApiError(400, "invalid_json", "request body is not valid JSON") from None

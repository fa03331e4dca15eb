"""The order schema: what a storefront sends, and the versioned record kept in Kafka.

Validation is declarative (msgspec constraints), so decoding a body and checking
it are one step that costs a few microseconds.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

RECORD_VERSION = 1
PER_ORDER_MAX_DEFAULT = 10
ATTRIBUTES_MAX = 16

# "$" alone also matches before a final newline in Python's re (msgspec searches
# with it): "bob\n" would pass and then split a line of admit.lua's input in two.
# The lookahead shuts that out and means nothing to a JSON Schema (ECMA) reader.
NAME_PATTERN = r"^[A-Za-z0-9._:-]+$(?!\n)"
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=NAME_PATTERN)]
AttrKey = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
AttrValue = Annotated[str, msgspec.Meta(max_length=256)]
Quantity = Annotated[int, msgspec.Meta(ge=1, le=1_000)]


class OrderRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The body of `POST /v1/orders`. Unknown fields are rejected."""

    sale_id: Name
    sku: Name
    quantity: Quantity
    user_id: Name
    attributes: Annotated[dict[AttrKey, AttrValue], msgspec.Meta(max_length=ATTRIBUTES_MAX)] = (
        msgspec.field(default_factory=dict)
    )


class OrderRecord(msgspec.Struct, frozen=True, kw_only=True):
    """The value of a record on the `orders` topic (and what the backend receives)."""

    v: int = RECORD_VERSION
    order_id: str
    accepted_at: float
    sale_id: str
    sku: str
    quantity: int
    user_id: str
    attributes: dict[str, str] = msgspec.field(default_factory=dict)

    @classmethod
    def from_request(cls, request: OrderRequest, order_id: str, accepted_at: float) -> OrderRecord:
        return cls(
            order_id=order_id,
            accepted_at=accepted_at,
            sale_id=request.sale_id,
            sku=request.sku,
            quantity=request.quantity,
            user_id=request.user_id,
            attributes=dict(request.attributes),
        )


_request_decoder = msgspec.json.Decoder(OrderRequest)
_record_decoder = msgspec.json.Decoder(OrderRecord)
_encoder = msgspec.json.Encoder()


def decode_request(body: bytes) -> OrderRequest:
    """Parse and validate a request body; raises msgspec.DecodeError / ValidationError."""
    return _request_decoder.decode(body)


def encode_record(record: OrderRecord) -> bytes:
    return _encoder.encode(record)


def decode_record(value: bytes) -> OrderRecord:
    return _record_decoder.decode(value)

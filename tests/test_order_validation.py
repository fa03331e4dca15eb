"""Order validation: the contract's 400 and 422 answers, and nothing else, for any body."""

from __future__ import annotations

import json
from unittest.mock import patch

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flashgate.ids import is_order_id, new_order_id
from flashgate.order import OrderRecord, decode_record, encode_record
from gateway.problems import ApiError
from gateway.validation import parse_order

VALID = {"sale_id": "sale-1", "sku": "SKU-1", "quantity": 1, "user_id": "user-42"}


def test_valid_order() -> None:
    order = parse_order(json.dumps({**VALID, "attributes": {"channel": "app"}}).encode())
    assert order.sale_id == "sale-1"
    assert order.attributes == {"channel": "app"}


@pytest.mark.parametrize("body", [b"", b"{", b"not json", b"\xff\xfe{}", b'{"a":1}x'])
def test_not_json_is_400(body: bytes) -> None:
    with pytest.raises(ApiError) as caught:
        parse_order(body)
    assert (caught.value.status, caught.value.code) == (400, "invalid_json")


def _details(body: object) -> dict[str, str]:
    with pytest.raises(ApiError) as caught:
        parse_order(json.dumps(body).encode())
    assert (caught.value.status, caught.value.code) == (422, "validation_error")
    return {d["field"]: d["error"] for d in caught.value.extra["details"]}


def test_every_bad_field_is_listed() -> None:
    details = _details({"sale_id": "bad id", "sku": "", "quantity": "1", "extra": True})
    assert set(details) == {"sale_id", "sku", "quantity", "user_id", "extra"}
    assert details["user_id"] == "required"
    assert details["extra"] == "unknown field"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sale_id", "x" * 65),
        ("sku", "SKU/1"),
        ("quantity", 0),
        ("quantity", 1.5),
        ("quantity", True),
        ("quantity", 10**30),
        ("user_id", None),
        ("attributes", {f"k{i}": "v" for i in range(17)}),
        ("attributes", {"k": 1}),
        ("attributes", ["k"]),
    ],
)
def test_field_limits(field: str, value: object) -> None:
    assert field in _details({**VALID, field: value})


@pytest.mark.parametrize("body", [[], "order", 1, None])
def test_body_must_be_an_object(body: object) -> None:
    assert "$" in _details(body)


@given(st.binary(max_size=300))
def test_any_bytes_give_an_order_or_a_4xx(body: bytes) -> None:
    try:
        parse_order(body)
    except ApiError as exc:
        assert exc.status in (400, 422)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=10), children, max_size=6)
        ),
        max_leaves=20,
    )
)
def test_any_json_gives_an_order_or_a_4xx(document: object) -> None:
    try:
        parse_order(json.dumps(document).encode())
    except ApiError as exc:
        assert exc.status in (400, 422)
        assert exc.extra.get("details") or exc.status == 400


def test_record_round_trip() -> None:
    order = parse_order(json.dumps(VALID).encode())
    record = OrderRecord.from_request(order, new_order_id(), 1.5)
    decoded = decode_record(encode_record(record))
    assert decoded == record
    assert json.loads(encode_record(record))["v"] == 1


def test_order_ids_are_time_ordered_and_unique() -> None:
    ids = [new_order_id(1_000 + i // 10) for i in range(1_000)]
    assert len(set(ids)) == len(ids)
    assert all(is_order_id(i) for i in ids)
    assert ids[::10] == sorted(ids[::10])
    assert not is_order_id("../etc/passwd")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"sale_id":"a","sku":"b","quantity":1,"user_id":"u","quantity":9}', "quantity"),
        (b'{"sale_id":"a","sale_id":"b","sku":"b","quantity":1,"user_id":"u"}', "sale_id"),
        (b'{"sale_id":"a","sku":"b","quantity":1,"user_id":"u","attributes":{"k":"1","k":"2"}}',
         "k"),
        # The same key escaped differently is still the same key.
        (b'{"sale_id":"a","sku":"b","quantity":1,"user_id":"u","sale\\u005fid":"z"}', "sale_id"),
        (b'{"sale_id":"a","sku":"b","quantity":1,"user_id":"u","attributes":{"k":"1","\\u006b":"2"}}',
         "k"),
    ],
)  # fmt: skip
def test_duplicate_keys_are_refused(body: bytes, field: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_order(body)
    assert caught.value.status == 422
    assert caught.value.extra["details"] == [{"field": field, "error": "duplicate field"}]


@pytest.mark.parametrize("name", ["bob\n", "\nbob", "b\tob", "bob\r\n"])
def test_names_with_line_breaks_are_refused(name: str) -> None:
    # Python's "$" also matches before a final newline: the pattern must not.
    body = json.dumps({**VALID, "user_id": name}).encode()
    with pytest.raises(ApiError) as caught:
        parse_order(body)
    assert caught.value.status == 422
    assert [d["field"] for d in caught.value.extra["details"]] == ["user_id"]


def test_field_names_inside_values_are_not_duplicates() -> None:
    body = b'{"sale_id":"a","sku":"b","quantity":1,"user_id":"u","attributes":{"quantity":"sku"}}'
    assert parse_order(body).attributes == {"quantity": "sku"}
    body = b'{"sale_id":"a","sku":"b","quantity":1,"user_id":"u","attributes":{"k":"k","c":"\\"k"}}'
    assert parse_order(body).attributes == {"k": "k", "c": '"k'}


def test_order_ids_encode_time_then_randomness() -> None:
    with patch("os.urandom", return_value=bytes(10)):
        assert new_order_id(0) == "0" * 26
        assert new_order_id(1) == "000000000" + "1" + "0" * 16
    with patch("os.urandom", return_value=b"\xff" * 10):
        assert new_order_id(2**48 - 1) == "7" + "Z" * 25


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deep_nesting_is_a_400_not_a_crash(depth: int) -> None:
    nested = b"[" * depth + b"]" * depth
    for body in (nested, b'{"sale_id":' + nested + b"}", b'{"attributes":' + nested + b"}"):
        with pytest.raises(ApiError) as caught:
            parse_order(body)
        assert caught.value.status in (400, 422)

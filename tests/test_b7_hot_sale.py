"""B7's measurement on a Redis of its own (it flushes the server between rows)."""

from __future__ import annotations

import re
from pathlib import Path

from flashgate.admission.keys import SaleKeys
from flashgate.stack.ports import free_port
from flashgate.stack.redis_server import RedisServer, redis_cli
from loadtest import b7_hot_sale as b7
from loadtest.bench import _flatten


def _set_calls(port: int) -> int:
    """SET commands the server ran so far (those of scripts included)."""
    match = re.search(r"^cmdstat_set:calls=(\d+),", redis_cli(port, "INFO", "commandstats"), re.M)
    return int(match[1]) if match else 0


def test_every_order_is_admitted_and_redis_cpu_is_read(tmp_path: Path) -> None:
    server = RedisServer(free_port(), tmp_path / "redis", appendonly=False)
    server.start(tmp_path / "redis.log")
    try:
        server.wait_listening()
        keys = SaleKeys.of(b7.SALE)
        admitted = b7.measure(server, "admit-16", 0.5, connections=2, depth=2)
        assert admitted["orders_per_s"] > 0
        assert 0 < admitted["redis_cpu_us_per_order"] < 10_000
        assert admitted["ceiling_orders_per_s"] > 0
        # Admitted only: every unit is held by a reservation, none accepted.
        held = int(redis_cli(server.port, "HGET", keys.reserved, b7.SKU))
        assert held > 0 and int(redis_cli(server.port, "HLEN", keys.reservations)) == held
        assert redis_cli(server.port, "HGET", keys.accepted, b7.SKU).strip() == ""
        confirmed = b7.measure(server, "admit+confirm-64", 0.5, connections=2, depth=2)
        assert confirmed["redis_cpu_us_per_order"] > 0
        # The row starts from a fresh sale; admitted and confirmed: nothing left held.
        assert int(redis_cli(server.port, "HGET", keys.reserved, b7.SKU)) == 0
        assert int(redis_cli(server.port, "HGET", keys.accepted, b7.SKU)) > 0
        # Limiters on (sale and user), never refusing: two GCRA keys SET per order
        # (they expire within a second, so count the SETs rather than the keys).
        sets_before = _set_calls(server.port)
        limited = b7.measure(server, "admit+confirm-64-limits", 0.5, connections=2, depth=2)
        assert limited["redis_cpu_us_per_order"] > 0
        assert _set_calls(server.port) - sets_before >= 2 * 64
    finally:
        server.stop()


def test_bench_lifts_the_slot_ceiling_to_the_headline() -> None:
    row = {"orders_per_s": 1.0, "redis_cpu_share": 0.5, "redis_cpu_us_per_order": 20.0,
           "ceiling_orders_per_s": 50_000.0}  # fmt: skip
    medians = {"admit+confirm-64": row, "admit-64": row, "admit+confirm-64-limits": row}
    flat = _flatten("B7", {"medians": medians, "all_runs": {}})
    assert flat["slot_orders_per_s"] == 50_000.0
    assert flat["slot_cpu_us_per_order"] == flat["admit_only_cpu_us_per_order"] == 20.0
    assert flat["limits_on_cpu_us_per_order"] == 20.0
    assert "medians" not in flat and "all_runs" not in flat

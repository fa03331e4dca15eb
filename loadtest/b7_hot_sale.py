"""B7, the ceiling of one hot sale: admit.lua driven straight at one Redis node.

One sale lives in one cluster slot, so on one primary's single thread: however many
gateways a deploy runs, one sale's admissions cannot go faster than that thread runs
admit.lua. This measures it: a local redis-server on a free loopback port (no
persistence), one sale whose stock never runs out (no rate limits, every order from
its own user, so every order takes admit.lua's full path and is admitted), orders
sent as the gateways send them: one EVALSHA per batch of 16, 64 or 256 orders,
pipelined `--depth` calls deep from `--connections` connections. Per row: orders/s
as measured here (the load generator shares this machine's cores with Redis), and
the redis-server process's CPU time per order (/proc, before and after), which
gives the row's ceiling: one core-second / CPU per order, the orders/s one Redis
thread can admit for one sale when it does nothing else.

Rows `admit-<n>`: admission alone (each order then holds a reservation).
Row `admit+confirm-64`: each batch admitted and then confirmed (confirm.lua, as the
gateway does once Kafka acknowledged the records), in one pipeline: everything the
sale's slot does per accepted order on the hot path.
Row `admit+confirm-64-limits`: the same with the sale and user limiters on, as the
deploys ship them (per-IP off), set so that neither refuses (a new user per order):
the GCRA keys' cost.

    .venv/bin/python -m loadtest.b7_hot_sale --quick   # ~20 s
    .venv/bin/python -m loadtest.b7_hot_sale           # 5 s runs x 3, medians
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

from flashgate.admission import admitter as admitter_module
from flashgate.admission.keys import SaleKeys
from flashgate.admission.sales import RateSpec, RatesSpec, SaleDefinition, SaleStore
from flashgate.redis_client import create_redis
from flashgate.redis_scripts.loader import RedisScripts, read_script
from flashgate.settings import RedisSettings, SalesSettings
from flashgate.stack.ports import free_port
from flashgate.stack.redis_server import RedisServer
from loadtest.harness import command_line, cpu_seconds

SALE = "b7"
SKU = "SKU-1"
OPEN = RateSpec(per_second=0, burst=1)
TTL_MS = "60000"
ROWS = ("admit-16", "admit-64", "admit-256", "admit+confirm-64", "admit+confirm-64-limits")
# Limits on as the deploys ship them (sale and user; per-IP off without a trusted
# X-Forwarded-For), never reached: the sale limiter far above any rate here, the user
# limiter at a shopper's pace (each order comes from a new user).
LIMITS = RatesSpec(
    sale=RateSpec(per_second=10**7, burst=10**9),
    user=RateSpec(per_second=1, burst=3),
    ip=OPEN,
)


def _batch_size(row: str) -> int:
    match = re.search(r"-(\d+)", row)
    assert match is not None, row
    return int(match[1])


async def _load_sale(url: str, limits: bool) -> None:
    redis = create_redis(RedisSettings(url=url))
    try:
        await redis.execute_command("FLUSHALL", "SYNC")
        store = SaleStore(RedisScripts(redis, admitter_module.SCRIPTS))
        rates = LIMITS if limits else RatesSpec(sale=OPEN, user=OPEN, ip=OPEN)
        definition = SaleDefinition(stock={SKU: 10**12}, rates=rates)
        await store.load(SALE, definition, SalesSettings())
        for name in ("admit", "confirm"):  # EVALSHA, as the gateways call them
            await redis.execute_command("SCRIPT", "LOAD", read_script(name).source)
    finally:
        await redis.aclose()


async def _drive(url: str, row: str, seconds: float, connections: int, depth: int) -> int:
    """Send batches for `seconds`; the number of orders admitted."""
    size = _batch_size(row)
    confirm = row.startswith("admit+confirm")
    keys = SaleKeys.of(SALE)
    admit_keys = [*keys.core, keys.sale_tat]
    admit_sha = read_script("admit").sha
    confirm_sha = read_script("confirm").sha
    counter = itertools.count()
    admitted = 0
    stop = time.monotonic() + seconds

    def batch() -> tuple[str, str]:
        lines = []
        for _ in range(size):
            n = next(counter)
            lines.append(f"b7o{n:012d}\t{SKU}\t1\tb7u{n}")
        plain = "\n".join(lines)
        return plain, "\n".join(f"{line}\t127.0.0.1" for line in lines)

    async def connection() -> None:
        nonlocal admitted
        redis = create_redis(RedisSettings(url=url))
        try:
            while time.monotonic() < stop:
                pipe = redis.pipeline(transaction=False)
                for _ in range(depth):
                    plain, with_ip = batch()
                    pipe.execute_command(
                        "EVALSHA", admit_sha, len(admit_keys), *admit_keys,
                        "", TTL_MS, str(size), with_ip,
                    )  # fmt: skip
                    if confirm:
                        pipe.execute_command(
                            "EVALSHA", confirm_sha, len(keys.core), *keys.core,
                            str(size), plain, "",
                        )  # fmt: skip
                replies = await pipe.execute()
                step = 2 if confirm else 1
                for reply in replies[::step]:
                    text = reply.decode() if isinstance(reply, bytes) else str(reply)
                    lines = text.split("\n")
                    if len(lines) != size or not all(line.startswith("ok ") for line in lines):
                        raise RuntimeError(f"{row}: not every order admitted: {text[:200]!r}")
                    admitted += size
                if confirm:
                    for reply in replies[1::2]:
                        flags = reply.decode() if isinstance(reply, bytes) else str(reply)
                        if flags != "1" * size:
                            raise RuntimeError(f"{row}: not every order confirmed: {flags[:80]!r}")
        finally:
            await redis.aclose()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return admitted


def measure(
    server: RedisServer, row: str, seconds: float, connections: int, depth: int
) -> dict[str, Any]:
    pid = server.process.pid if server.process is not None else None
    assert pid is not None
    uvloop.run(_load_sale(server.url, limits=row.endswith("-limits")))
    cpu_before = cpu_seconds(pid)
    started = time.monotonic()
    orders = uvloop.run(_drive(server.url, row, seconds, connections, depth))
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(pid) - cpu_before
    us_per_order = cpu / orders * 1e6
    return {
        "orders_per_s": round(orders / elapsed, 1),
        "redis_cpu_share": round(cpu / elapsed, 3),
        "redis_cpu_us_per_order": round(us_per_order, 3),
        "ceiling_orders_per_s": round(1e6 / us_per_order, 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s runs, 1 round")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--depth", type=int, default=4, help="EVALSHA calls per pipeline")
    parser.add_argument("--rows", help="comma-separated subset of " + ",".join(ROWS))
    args = parser.parse_args()
    seconds, runs = (2.0, 1) if args.quick else (args.seconds, args.runs)
    names = [n for n in args.rows.split(",") if n] if args.rows else list(ROWS)
    unknown = set(names) - set(ROWS)
    if unknown:
        parser.error(f"unknown rows {sorted(unknown)}")
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="flashgate-b7-"))
    server = RedisServer(free_port(), root, appendonly=False)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    try:
        server.start(root / "redis.log")
        server.wait_listening()
        for name in names:  # warm up: connections, script cache, allocator
            measure(server, name, 0.5, args.connections, args.depth)
        for _ in range(runs):  # interleaved, so a noisy neighbour hits every row
            for name in names:
                results[name].append(measure(server, name, seconds, args.connections, args.depth))
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    medians = {
        name: {key: round(statistics.median(r[key] for r in rs), 3) for key in rs[0]}
        for name, rs in results.items()
    }
    summary = {
        "benchmark": "B7 the ceiling of one hot sale",
        "command": command_line("loadtest.b7_hot_sale"),
        "seconds_per_run": seconds,
        "runs": runs,
        "connections": args.connections,
        "pipeline_depth": args.depth,
        "medians": medians,
        "all_runs": results,
        "wall_s": round(time.monotonic() - started, 1),
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

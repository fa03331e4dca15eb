"""The gateway app's own CPU per order, with no HTTP server: an ablation for B1.

B1 divides the gateway's rate by a bare endpoint's on Hypercorn; on this kind of
machine Hypercorn's own work per request is most of both. This drives the ASGI
app directly (the same middleware, validation, Redis admission, Kafka produce and
acknowledgement, settling) from `--concurrency` concurrent callers on one event
loop, against a real Redis and Kafka broker, and reports the event-loop thread's
CPU per order: what the gateway adds on top of the server, the figure to lower.

    .venv/bin/python loadtest/app_cost.py --seconds 10 --runs 3
    .venv/bin/python loadtest/app_cost.py --seconds 5 --runs 4 \
        --variant batched: --variant unbatched:FLASHGATE_GATEWAY_ADMISSION_BATCHING=false
    .venv/bin/python loadtest/app_cost.py --redis-cluster --variant cluster: \
        --variant cluster-wait1:FLASHGATE_REDIS_WAIT_REPLICAS=1 \
        --variant standalone:FLASHGATE_REDIS_MODE=standalone
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import uvloop
from b1_admission import load_bench_sales
from harness import Stack, command_line, redis_cluster

from flashgate.settings import RedisSettings, load_settings
from gateway.app import create_app

BODY = (
    b'{"sale_id":"bench","sku":"SKU-1","quantity":1,"user_id":"u-%d",'
    b'"attributes":{"channel":"bench"}}'
)
WARM_UP_S = 15.0  # a fresh broker's JIT compiles for tens of seconds


def _scope(app: Any, body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/orders",
        "raw_path": b"/v1/orders",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
        "state": {},
    }


async def _caller(app: Any, index: int, deadline: float, statuses: dict[int, int]) -> None:
    counter = 0
    while time.monotonic() < deadline:
        counter += 1
        body = BODY % (index * 10_000_000 + counter)
        sent: list[dict[str, Any]] = []

        async def receive(body: bytes = body) -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any], sent: list[dict[str, Any]] = sent) -> None:
            sent.append(message)

        await app(_scope(app, body), receive, send)
        status = sent[0]["status"]
        statuses[status] = statuses.get(status, 0) + 1


async def _run(app: Any, seconds: float, concurrency: int) -> dict[str, Any]:
    statuses: dict[int, int] = {}
    started, cpu = time.monotonic(), time.thread_time()
    deadline = started + seconds
    await asyncio.gather(*(_caller(app, i, deadline, statuses) for i in range(concurrency)))
    elapsed, cpu = time.monotonic() - started, time.thread_time() - cpu
    done = sum(statuses.values())
    return {
        "orders_per_s": round(statuses.get(202, 0) / elapsed, 1),
        "loop_cpu_us_per_order": round(cpu / max(1, done) * 1e6, 1),
        "loop_cpu_share": round(cpu / elapsed, 3),
        "statuses": statuses,
    }


async def _measure(settings: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await _run(app, WARM_UP_S if not args.quick else 3.0, args.concurrency)
        return [await _run(app, args.seconds, args.concurrency) for _ in range(args.runs)]


def _variants(specs: list[str], common: dict[str, str]) -> dict[str, dict[str, str]]:
    """`NAME:FLASHGATE_X=Y,FLASHGATE_Z=W` -> name -> overrides (on top of `--set`)."""
    if not specs:
        return {"app": common}
    variants = {}
    for spec in specs:
        name, _, items = spec.partition(":")
        pairs = dict(item.split("=", 1) for item in items.split(",") if item)
        variants[name] = {**common, **pairs}
    return variants


async def _compare(
    variables: Callable[[dict[str, str]], dict[str, str]],
    variants: dict[str, dict[str, str]],
    args: argparse.Namespace,
) -> dict[str, list[dict[str, Any]]]:
    """Each variant's runs, interleaved round by round (this machine drifts)."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    one_run = argparse.Namespace(**{**vars(args), "runs": 1})
    for round_ in range(args.runs):
        for name, overrides in variants.items():
            one_run.quick = args.quick or round_ > 0 or name != next(iter(variants))
            settings = load_settings(environ=variables(overrides))
            runs[name] += await _measure(settings, one_run)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="3 s warm-up")
    parser.add_argument("--existing", action="store_true",
                        help="use the Redis and Kafka of FLASHGATE_* (sale loaded)")  # fmt: skip
    parser.add_argument("--set", action="append", default=[], metavar="FLASHGATE_X=Y",
                        help="a settings override for the app (repeatable)")  # fmt: skip
    parser.add_argument("--variant", action="append", default=[],
                        metavar="NAME:FLASHGATE_X=Y,...",
                        help="variants to compare, interleaved per round (repeatable)")  # fmt: skip
    parser.add_argument("--redis-cluster", action="store_true",
                        help="on a local Redis Cluster of 3 primaries + 3 replicas")  # fmt: skip
    args = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in args.set)
    variants = _variants(args.variant, overrides)
    if args.existing:
        runs = uvloop.run(_compare(lambda o: {**os.environ, **o}, variants, args))
    else:
        with Stack() as stack, contextlib.ExitStack() as cleanup:
            assert stack.redis is not None
            redis = RedisSettings(url=stack.redis.url)
            if args.redis_cluster:
                cluster = cleanup.enter_context(redis_cluster(stack.root / "redis-cluster"))
                redis = RedisSettings(mode="cluster", url=cluster.url)
            asyncio.run(load_bench_sales(redis.url, redis.mode))
            if args.redis_cluster:  # a variant may go back to the standalone Redis
                asyncio.run(load_bench_sales(stack.redis.url))
            extra = {"FLASHGATE_REDIS_MODE": redis.mode, "FLASHGATE_REDIS_URL": redis.url}

            def variables(o: dict[str, str]) -> dict[str, str]:
                standalone = o.get("FLASHGATE_REDIS_MODE") == "standalone"
                return stack.variables(**({} if standalone else extra), **o)

            runs = uvloop.run(_compare(variables, variants, args))
    summary = {
        "benchmark": "gateway app CPU per order, no HTTP server",
        "command": command_line("loadtest.app_cost"),
        "concurrency": args.concurrency,
        "variants": {
            name: {
                "overrides": variants[name],
                "loop_cpu_us_per_order": statistics.median(
                    r["loop_cpu_us_per_order"] for r in runs[name]
                ),
                "orders_per_s": statistics.median(r["orders_per_s"] for r in runs[name]),
                "runs": runs[name],
            }
            for name in variants
        },
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

"""B1, admission efficiency: accepted orders/s through the full path (validate + Redis +
Kafka ack) divided by requests/s of a bare Starlette endpoint on the same Hypercorn
settings and the same load generator (wrk), with p50/p99 and the servers' CPU.

Self-contained: starts Redis, a Kafka broker and every server on free loopback ports,
runs the rows interleaved (round-robin, `--runs` times), prints one JSON summary with
medians and ratios, and stops everything.

    .venv/bin/python loadtest/b1_admission.py --quick          # ~1 min, 3 s runs
    .venv/bin/python loadtest/b1_admission.py                  # 10 s runs x 3, medians

Rows:
  bare              bare Starlette POST on Hypercorn (the denominator)
  gateway           the full path with default settings
  gateway-redispy   batched, but the batches go through redis-py (`admission_lean_wire = false`)
  gateway-nobatch   `admission_batching = false`: one redis-py call per step and request
  gateway-idem      the full path with a unique Idempotency-Key on every request
  gateway-cluster   the full path on a local Redis Cluster (3 primaries + 3 replicas)
  gateway-cluster-wait1   the same with `wait_replicas = 1` (a WAIT per node and batch)
  soldout-flag      a sold-out rush (every answer 409) with the local sold-out memory
  soldout-noflag    the same with `sold_out_cache_ms = 0` (Redis answers every 409)
  bare-uvicorn / gateway-uvicorn   the same app on uvicorn + httptools (if installed)
  gateway@REF       with `--compare-ref REF`: the gateway of another commit (a temporary
                    git worktree), to measure what a change bought side by side
Then the gateway is run again at 80 % of its measured maximum (paced wrk) for p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import REPO, Stack, command_line, cpu_seconds, redis_cluster, wrk

from flashgate.admission import admitter as admitter_module
from flashgate.admission.sales import RateSpec, RatesSpec, SaleDefinition, SaleStore
from flashgate.redis_client import create_redis
from flashgate.redis_scripts.loader import RedisScripts
from flashgate.settings import RedisSettings, SalesSettings
from flashgate.stack.ports import free_port

SCRIPT = REPO / "loadtest" / "wrk" / "post_order.lua"
OPEN = RateSpec(per_second=0, burst=1)


async def load_bench_sales(redis_url: str, mode: str = "standalone") -> None:
    redis = create_redis(RedisSettings(mode=mode, url=redis_url))
    try:
        store = SaleStore(RedisScripts(redis, admitter_module.SCRIPTS))
        rates = RatesSpec(sale=OPEN, user=OPEN, ip=OPEN)
        await store.load("bench", SaleDefinition(stock={"SKU-1": 10**12}, rates=rates),
                         SalesSettings())  # fmt: skip
        await store.load("gone", SaleDefinition(stock={"SKU-1": 0}, rates=rates), SalesSettings())
    finally:
        await redis.aclose()


def _rows(
    stack: Stack,
    names: list[str],
    trees: dict[str, Path] | None = None,
    cluster_url: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Start one server per row; return name -> {url, pid, env for wrk}."""
    python = sys.executable
    rows: dict[str, dict[str, Any]] = {}
    for name in names:
        port = free_port()
        wrk_env: dict[str, str] = {}
        if trees and name in trees:
            process, port, _ = stack.start_gateway(tree=trees[name])
        elif name in ("bare", "bare-uvicorn"):
            server = "uvicorn" if name.endswith("uvicorn") else "hypercorn"
            argv = [python, str(REPO / "loadtest" / "bare_app.py"), "--port", str(port),
                    "--server", server]  # fmt: skip
            process = stack.start(name, argv, port)
        elif name == "gateway-uvicorn":
            argv = [python, str(REPO / "loadtest" / "serve_uvicorn.py")]
            process = stack.start(name, argv, port, FLASHGATE_GATEWAY_PORT=str(port))
        else:
            overrides = {
                "gateway-nobatch": {"FLASHGATE_GATEWAY_ADMISSION_BATCHING": "false"},
                "gateway-redispy": {"FLASHGATE_GATEWAY_ADMISSION_LEAN_WIRE": "false"},
                "soldout-noflag": {"FLASHGATE_GATEWAY_SOLD_OUT_CACHE_MS": "0"},
                "gateway-cluster-wait1": {"FLASHGATE_REDIS_WAIT_REPLICAS": "1"},
            }.get(name, {})
            if name.startswith("gateway-cluster"):
                assert cluster_url is not None
                overrides |= {"FLASHGATE_REDIS_MODE": "cluster", "FLASHGATE_REDIS_URL": cluster_url}
            process, port, _ = stack.start_gateway(**overrides)
            if name == "gateway-idem":
                wrk_env["IDEMPOTENCY"] = "1"
            if name.startswith("soldout"):
                wrk_env["SALE"] = "gone"
        rows[name] = {"url": f"http://127.0.0.1:{port}/v1/orders", "pid": process.pid,
                      "env": wrk_env}  # fmt: skip
    return rows


def _measure(row: dict[str, Any], seconds: float, connections: int,
             extra_env: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    env = {**row["env"], **(extra_env or {}), "CONNECTIONS": str(connections)}
    cpu_before = cpu_seconds(row["pid"])
    result = wrk(row["url"], script=SCRIPT, seconds=seconds, connections=connections, env=env)
    cpu = cpu_seconds(row["pid"]) - cpu_before
    statuses = {int(k): v for k, v in result["statuses"].items()}
    good = statuses.get(202, 0) if row["env"].get("SALE") != "gone" else statuses.get(409, 0)
    result["good_per_s"] = round(good / result["duration_s"], 1)
    result["server_cpu_share"] = round(cpu / result["duration_s"], 3)
    result["server_cpu_us_per_req"] = round(cpu / max(1, result["requests"]) * 1e6, 1)
    return result


@contextlib.contextmanager
def _worktree(ref: str, root: Path) -> Iterator[Path]:
    """A detached checkout of `ref` under `root`, removed afterwards."""
    path = root / "compare-tree"
    git = ["git", "-C", str(REPO)]
    subprocess.run([*git, "worktree", "add", "--detach", str(path), ref], check=True,
                   capture_output=True)  # fmt: skip
    try:
        yield path
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(path)], check=False,
                       capture_output=True)  # fmt: skip


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ["req_per_s", "good_per_s", "p50_ms", "p99_ms", "server_cpu_share",
            "server_cpu_us_per_req"]  # fmt: skip
    return {k: round(statistics.median(r[k] for r in runs), 3) for k in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s runs, 1 round")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3, help="rounds (medians are reported)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rows", help="comma-separated subset of rows")
    parser.add_argument(
        "--kafka-security", choices=["plaintext", "sasl_ssl", "mtls"], default="plaintext",
        help="the broker's listener (sasl_ssl: SCRAM-SHA-512 over TLS)",
    )  # fmt: skip
    parser.add_argument("--compare-ref", help="add the gateway of this git commit as a row")
    parser.add_argument("--kafka-warm-up-s", type=float, default=60.0,
                        help="produce traffic before measuring, for the broker's JIT")  # fmt: skip
    args = parser.parse_args()
    seconds, runs = (3.0, 1) if args.quick else (args.seconds, args.runs)
    names = ["bare", "gateway", "gateway-redispy", "gateway-nobatch", "gateway-idem",
             "soldout-flag", "soldout-noflag"]  # fmt: skip
    if importlib.util.find_spec("uvicorn") is not None:
        names += ["bare-uvicorn", "gateway-uvicorn"]
    if args.rows:
        names = [n for n in args.rows.split(",") if n]

    with Stack(kafka_security=args.kafka_security) as stack, contextlib.ExitStack() as cleanup:
        assert stack.redis is not None
        asyncio.run(load_bench_sales(stack.redis.url))
        trees: dict[str, Path] = {}
        if args.compare_ref:
            name = f"gateway@{args.compare_ref}"
            trees[name] = cleanup.enter_context(_worktree(args.compare_ref, stack.root))
            names.append(name)
        cluster_url = None
        if any(name.startswith("gateway-cluster") for name in names):
            cluster_url = cleanup.enter_context(redis_cluster(stack.root / "redis-cluster")).url
            asyncio.run(load_bench_sales(cluster_url, "cluster"))
        rows = _rows(stack, names, trees, cluster_url)
        # Warm up: connections and caches everywhere, and the broker's JIT compiler,
        # which otherwise burns most of a core for the first tens of seconds of
        # produce traffic, on the core the load generator and Redis share.
        for row in rows.values():
            _measure(row, 1.0, args.connections)
        kafka_rows = [name for name in names if not name.startswith("bare")]
        if kafka_rows:
            _measure(rows[kafka_rows[0]], args.kafka_warm_up_s, args.connections)
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        for _ in range(runs):
            for name in names:
                results[name].append(_measure(rows[name], seconds, args.connections))
        medians = {name: _median(r) for name, r in results.items()}
        at_80: dict[str, Any] = {}
        if "gateway" in rows:
            target = 0.8 * medians["gateway"]["good_per_s"]
            paced = _measure(rows["gateway"], seconds, args.connections,
                             {"RATE": str(round(target))})  # fmt: skip
            at_80 = {"target_req_per_s": round(target), **_median([paced])}

    def ratio(a: str, b: str, key: str = "good_per_s") -> float | None:
        if a in medians and b in medians and medians[b]["req_per_s"]:
            return round(medians[a][key] / medians[b]["req_per_s"], 3)
        return None

    def cpu_ratio(a: str, b: str) -> float | None:
        # bare's server CPU per request / the row's: what throughput ratio a CPU-bound
        # server would reach; steadier than req/s on a shared machine.
        if a in medians and b in medians and medians[a]["server_cpu_us_per_req"]:
            return round(
                medians[b]["server_cpu_us_per_req"] / medians[a]["server_cpu_us_per_req"], 3
            )
        return None

    summary = {
        "benchmark": "B1 admission efficiency",
        "command": command_line("loadtest.b1_admission"),
        "seconds_per_run": seconds,
        "runs": runs,
        "connections": args.connections,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "medians": medians,
        "ratios": {
            "B1 gateway/bare": ratio("gateway", "bare"),
            "gateway-redispy/bare": ratio("gateway-redispy", "bare"),
            "gateway-nobatch/bare": ratio("gateway-nobatch", "bare"),
            "gateway-idem/bare": ratio("gateway-idem", "bare"),
            "soldout-flag/bare": ratio("soldout-flag", "bare"),
            "soldout-noflag/bare": ratio("soldout-noflag", "bare"),
            "bare-uvicorn/bare": ratio("bare-uvicorn", "bare", "req_per_s"),
            "gateway-uvicorn/bare-uvicorn": ratio("gateway-uvicorn", "bare-uvicorn"),
            "gateway-uvicorn/bare": ratio("gateway-uvicorn", "bare"),
            **{f"{name}/bare": ratio(name, "bare") for name in names if "@" in name},
        },
        "cpu_per_request_ratios": {
            name: cpu_ratio(name, "bare-uvicorn" if name == "gateway-uvicorn" else "bare")
            for name in names
            if name not in ("bare", "bare-uvicorn")
        },
        "gateway_at_80pct": at_80,
        "all_runs": results,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

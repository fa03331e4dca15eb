"""B1, admission efficiency: accepted orders/s through the full path (validate + Redis +
Kafka ack) divided by requests/s of a bare Starlette endpoint on the same Hypercorn
settings and the same load generator (wrk), with p50/p99 and the servers' CPU.

Self-contained: starts Redis, a Kafka broker and every server on free loopback ports,
runs the rows interleaved (round-robin, `--runs` times), prints one JSON summary with
medians and ratios, and stops everything.

    .venv/bin/python loadtest/b1_admission.py --quick          # ~1 min, 3 s runs
    .venv/bin/python loadtest/b1_admission.py                  # 10 s runs x 3, medians
    .venv/bin/python loadtest/b1_admission.py --rows bare,gateway,gateway-sasl   # TLS's cost

Rows:
  bare              bare Starlette POST on Hypercorn (the denominator)
  gateway           the full path with default settings
  gateway-nobatch   `admission_batching = false`: one redis-py call per step and request
  gateway-idem      the full path with a unique Idempotency-Key on every request
  gateway-cluster   the full path on a local Redis Cluster (3 primaries + 3 replicas)
  gateway-cluster-wait1   the same with `wait_replicas = 1` (a WAIT per node and batch)
  soldout-flag      a sold-out rush (every answer 409) with the local sold-out memory
  soldout-noflag    the same with `sold_out_cache_ms = 0` (Redis answers every 409)
  bare-uvicorn / gateway-uvicorn   the same app on uvicorn + httptools (if installed)
  gateway@REF       with `--compare-ref REF`: the gateway of another commit (a temporary
                    git worktree), to measure what a change bought side by side
  ROW-sasl          ROW (gateway, gateway-idem, soldout-flag, ...) with Kafka over SASL_SSL
                    (SCRAM-SHA-512). The broker then has a SASL_SSL listener and a
                    PLAINTEXT one beside it: the -sasl rows use the first, every other row
                    the second, so one run compares them on one broker, Redis and topic.
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
# A row name ending so runs that row's server against the broker's SASL_SSL listener.
SECURED_SUFFIX = "-sasl"
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
    # The broker's CPU is measured per row too: where Kafka over TLS costs, it is there.
    broker_process = stack.broker.process if stack.broker else None
    kafka_pid = broker_process.pid if broker_process else None
    for name in names:
        port = free_port()
        wrk_env: dict[str, str] = {}
        base = name.removesuffix(SECURED_SUFFIX)
        # Beside a secured listener, the rows without the suffix use the PLAINTEXT one.
        listener = (
            "" if name.endswith(SECURED_SUFFIX) or stack.plaintext_port is None else "plaintext"
        )
        if trees and name in trees:
            process, port, _ = stack.start_gateway(tree=trees[name], listener=listener)
        elif name in ("bare", "bare-uvicorn"):
            server = "uvicorn" if name.endswith("uvicorn") else "hypercorn"
            argv = [python, str(REPO / "loadtest" / "bare_app.py"), "--port", str(port),
                    "--server", server]  # fmt: skip
            process = stack.start(name, argv, port)
        elif base == "gateway-uvicorn":
            argv = [python, str(REPO / "loadtest" / "serve_uvicorn.py")]
            process = stack.start(name, argv, port, listener=listener,
                                  FLASHGATE_GATEWAY_PORT=str(port))  # fmt: skip
        else:
            overrides = {
                "gateway-nobatch": {"FLASHGATE_GATEWAY_ADMISSION_BATCHING": "false"},
                "soldout-noflag": {"FLASHGATE_GATEWAY_SOLD_OUT_CACHE_MS": "0"},
                "gateway-cluster-wait1": {"FLASHGATE_REDIS_WAIT_REPLICAS": "1"},
            }.get(base, {})
            if base.startswith("gateway-cluster"):
                assert cluster_url is not None
                overrides |= {"FLASHGATE_REDIS_MODE": "cluster", "FLASHGATE_REDIS_URL": cluster_url}
            process, port, _ = stack.start_gateway(listener=listener, **overrides)
            if base == "gateway-idem":
                wrk_env["IDEMPOTENCY"] = "1"
            if base.startswith("soldout"):
                wrk_env["SALE"] = "gone"
        rows[name] = {"url": f"http://127.0.0.1:{port}/v1/orders", "pid": process.pid,
                      "env": wrk_env, "kafka_pid": kafka_pid}  # fmt: skip
    return rows


def _measure(row: dict[str, Any], seconds: float, connections: int,
             extra_env: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    env = {**row["env"], **(extra_env or {}), "CONNECTIONS": str(connections)}
    kafka_pid = row.get("kafka_pid")
    cpu_before = cpu_seconds(row["pid"])
    kafka_before = cpu_seconds(kafka_pid) if kafka_pid else 0.0
    result = wrk(row["url"], script=SCRIPT, seconds=seconds, connections=connections, env=env)
    cpu = cpu_seconds(row["pid"]) - cpu_before
    kafka_cpu = cpu_seconds(kafka_pid) - kafka_before if kafka_pid else 0.0
    statuses = {int(k): v for k, v in result["statuses"].items()}
    good = statuses.get(202, 0) if row["env"].get("SALE") != "gone" else statuses.get(409, 0)
    result["good_per_s"] = round(good / result["duration_s"], 1)
    result["server_cpu_share"] = round(cpu / result["duration_s"], 3)
    result["server_cpu_us_per_req"] = round(cpu / max(1, result["requests"]) * 1e6, 1)
    result["kafka_cpu_us_per_req"] = round(kafka_cpu / max(1, result["requests"]) * 1e6, 1)
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
            "server_cpu_us_per_req", "kafka_cpu_us_per_req"]  # fmt: skip
    return {k: round(statistics.median(r[k] for r in runs), 3) for k in keys}


def _secured_cost(secured: dict[str, Any], plain: dict[str, Any]) -> dict[str, Any]:
    """A -sasl row's medians against its plaintext twin's."""
    good = plain["good_per_s"]
    return {
        "good_per_s_ratio": round(secured["good_per_s"] / good, 3) if good else None,
        "server_cpu_us_per_req_added": round(
            secured["server_cpu_us_per_req"] - plain["server_cpu_us_per_req"], 1
        ),
        "kafka_cpu_us_per_req_added": round(
            secured["kafka_cpu_us_per_req"] - plain["kafka_cpu_us_per_req"], 1
        ),
        "p50_ms_added": round(secured["p50_ms"] - plain["p50_ms"], 3),
        "p99_ms_added": round(secured["p99_ms"] - plain["p99_ms"], 3),
    }


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
    names = ["bare", "gateway", "gateway-nobatch", "gateway-idem",
             "soldout-flag", "soldout-noflag"]  # fmt: skip
    if importlib.util.find_spec("uvicorn") is not None:
        names += ["bare-uvicorn", "gateway-uvicorn"]
    if args.rows:
        names = [n for n in args.rows.split(",") if n]

    side_by_side = any(name.endswith(SECURED_SUFFIX) for name in names)
    if side_by_side and args.kafka_security not in ("plaintext", "sasl_ssl"):
        parser.error(f"rows ending {SECURED_SUFFIX} need --kafka-security plaintext or sasl_ssl")
    security = "sasl_ssl" if side_by_side else args.kafka_security

    with Stack(kafka_security=security, plaintext_beside=side_by_side) as stack, \
            contextlib.ExitStack() as cleanup:  # fmt: skip
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
        # One warm-up per listener: the TLS and SCRAM code paths have their own JIT warm-up.
        plain_rows = [name for name in kafka_rows if not name.endswith(SECURED_SUFFIX)]
        secured_rows = [name for name in kafka_rows if name.endswith(SECURED_SUFFIX)]
        for warm in plain_rows[:1] + secured_rows[:1]:
            _measure(rows[warm], args.kafka_warm_up_s, args.connections)
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
        "kafka": (
            "one broker: its SASL_SSL (SCRAM-SHA-512) listener for the -sasl rows, "
            "its PLAINTEXT listener for the others"
            if side_by_side
            else args.kafka_security
        ),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "medians": medians,
        "ratios": {
            "B1 gateway/bare": ratio("gateway", "bare"),
            "gateway-nobatch/bare": ratio("gateway-nobatch", "bare"),
            "gateway-idem/bare": ratio("gateway-idem", "bare"),
            "soldout-flag/bare": ratio("soldout-flag", "bare"),
            "soldout-noflag/bare": ratio("soldout-noflag", "bare"),
            "bare-uvicorn/bare": ratio("bare-uvicorn", "bare", "req_per_s"),
            "gateway-uvicorn/bare-uvicorn": ratio("gateway-uvicorn", "bare-uvicorn"),
            "gateway-uvicorn/bare": ratio("gateway-uvicorn", "bare"),
            **{f"{name}/bare": ratio(name, "bare") for name in names if "@" in name},
            **{
                f"{name}/bare": ratio(name, "bare")
                for name in names
                if name.endswith(SECURED_SUFFIX)
            },
        },
        # What Kafka over SASL_SSL costs, on the same broker in the same run: each -sasl
        # row against its plaintext twin (when both ran).
        "sasl_ssl_cost": {
            name: _secured_cost(medians[name], medians[twin])
            for name in names
            if name.endswith(SECURED_SUFFIX)
            and (twin := name.removesuffix(SECURED_SUFFIX)) in medians
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

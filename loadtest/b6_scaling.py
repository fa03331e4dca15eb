"""B6, scaling: accepted orders/s and server CPU per order for 1 and W gateway workers
(`[gateway] workers`), side by side in one run, and the scaling factor.

Self-contained like B1: starts Redis and a Kafka broker on free loopback ports,
one gateway per row (`workers = 1`, `workers = W`), runs the rows interleaved
(round-robin, `--runs` times) with wrk and B1's order script, prints one JSON
summary with medians and ratios, and stops everything.

Pinning (`taskset`): a row's gateway (its supervisor and workers inherit the mask)
gets the first `workers` CPUs and wrk the CPUs left, when any are left; a row
whose workers take every CPU runs wrk unpinned beside them (its summary says
so). Redis and Kafka are never pinned. Server CPU is the gateway's process tree
(supervisor + workers, user + system from /proc); Redis' and Kafka's are beside it.

    .venv/bin/python -m loadtest.b6_scaling --quick     # 3 s runs, 1 round
    .venv/bin/python -m loadtest.b6_scaling             # 10 s runs x 3, medians
    .venv/bin/python -m loadtest.b6_scaling --workers 4 # 1 against 4 workers
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from b1_admission import SCRIPT, load_bench_sales
from harness import Stack, command_line, cpu_seconds, tree_pids, wrk

from flashgate.stack.ports import free_port, wait_for_port


def tree_cpu_seconds(pid: int) -> float:
    total = 0.0
    for member in tree_pids(pid):
        try:
            total += cpu_seconds(member)
        except (OSError, IndexError):
            continue  # gone between the listing and the read
    return total


def cpu_list(cpus: list[int]) -> str:
    return ",".join(str(cpu) for cpu in cpus)


def _start_row(stack: Stack, workers: int, available: list[int]) -> dict[str, Any]:
    """A gateway of `workers` workers pinned to the first `workers` CPUs; wrk's CPUs."""
    port, admin_port = free_port(), free_port()
    server_cpus = available[:workers]
    left = available[workers:]
    taskset = shutil.which("taskset")
    argv = [sys.executable, "-m", "gateway.main"]
    if taskset:
        argv = [taskset, "-c", cpu_list(server_cpus), *argv]
    process = stack.start(
        f"gateway-{workers}w", argv, port,
        FLASHGATE_GATEWAY_PORT=str(port), FLASHGATE_ADMIN_PORT=str(admin_port),
        FLASHGATE_GATEWAY_WORKERS=str(workers),
    )  # fmt: skip
    wait_for_port("admin", "127.0.0.1", admin_port, 30)
    assert process.pid is not None
    wrk_cpus = left if (taskset and left) else None
    return {
        "url": f"http://127.0.0.1:{port}/v1/orders",
        "pid": process.pid,
        "server_cpus": cpu_list(server_cpus) if taskset else "unpinned",
        "wrk_cpus": cpu_list(wrk_cpus) if wrk_cpus else "unpinned (shares the server's)",
        "wrk_prefix": [taskset, "-c", cpu_list(wrk_cpus)] if taskset and wrk_cpus else [],
    }


def _measure(row: dict[str, Any], stack: Stack, seconds: float, connections: int) -> dict[str, Any]:
    redis_pid = stack.redis.process.pid if stack.redis and stack.redis.process else None
    kafka_pid = stack.broker.process.pid if stack.broker and stack.broker.process else None
    before = tree_cpu_seconds(row["pid"])
    redis_before = cpu_seconds(redis_pid) if redis_pid else 0.0
    kafka_before = cpu_seconds(kafka_pid) if kafka_pid else 0.0
    result = wrk(
        row["url"], script=SCRIPT, seconds=seconds, connections=connections,
        env={"CONNECTIONS": str(connections)}, prefix=row["wrk_prefix"],
    )  # fmt: skip
    server = tree_cpu_seconds(row["pid"]) - before
    redis = (cpu_seconds(redis_pid) - redis_before) if redis_pid else 0.0
    kafka = (cpu_seconds(kafka_pid) - kafka_before) if kafka_pid else 0.0
    accepted = {int(k): v for k, v in result["statuses"].items()}.get(202, 0)
    duration = result["duration_s"]
    per_order = 1e6 / max(1, accepted)
    return {
        "accepted_per_s": round(accepted / duration, 1),
        "req_per_s": result["req_per_s"],
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "server_cpu_share": round(server / duration, 3),
        "server_cpu_us_per_order": round(server * per_order, 1),
        "redis_cpu_us_per_order": round(redis * per_order, 1),
        "kafka_cpu_us_per_order": round(kafka * per_order, 1),
    }


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s runs, 1 round")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3, help="rounds (medians are reported)")
    parser.add_argument("--connections", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="the row to set beside 1")
    parser.add_argument("--kafka-warm-up-s", type=float, default=60.0,
                        help="produce traffic before measuring, for the broker's JIT")  # fmt: skip
    args = parser.parse_args()
    seconds, runs = (3.0, 1) if args.quick else (args.seconds, args.runs)
    available = sorted(os.sched_getaffinity(0))
    counts = [1, args.workers]
    with Stack() as stack:
        assert stack.redis is not None
        asyncio.run(load_bench_sales(stack.redis.url))
        rows = {f"{n}-worker{'s' if n > 1 else ''}": _start_row(stack, n, available)
                for n in counts}  # fmt: skip
        names = list(rows)
        for row in rows.values():
            _measure(row, stack, 1.0, args.connections)
        _measure(rows[names[0]], stack, args.kafka_warm_up_s, args.connections)
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        for _ in range(runs):
            for name in names:
                results[name].append(_measure(rows[name], stack, seconds, args.connections))
    medians = {name: _median(r) for name, r in results.items()}
    one, many = medians[names[0]], medians[names[1]]
    summary = {
        "benchmark": "B6 scaling",
        "command": command_line("loadtest.b6_scaling"),
        "seconds_per_run": seconds,
        "runs": runs,
        "connections": args.connections,
        "machine": {"cpus": len(available), "python": platform.python_version()},
        "pinning": {
            name: {"server": row["server_cpus"], "wrk": row["wrk_cpus"]}
            for name, row in rows.items()
        },
        "medians": medians,
        "ratios": {
            "scaling": round(many["accepted_per_s"] / one["accepted_per_s"], 3)
            if one["accepted_per_s"]
            else None,
            "server_cpu_per_order": round(
                many["server_cpu_us_per_order"] / one["server_cpu_us_per_order"], 3
            )
            if one["server_cpu_us_per_order"]
            else None,
        },
        "all_runs": results,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

"""`make bench`: B1-B7 side by side in one run, medians of 3, written to loadtest/RESULTS.md.

Each benchmark is its own script that starts what it needs on free loopback
ports and prints one JSON summary as its last line; this runner repeats each,
keeps the run with the median headline figure (so its numbers belong
together), draws the B2/B3 plot and writes the report.

    .venv/bin/python -m loadtest.bench            # full: medians of 3
    .venv/bin/python -m loadtest.bench --quick    # a first look, under 2 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest.harness import repo_relative
from loadtest.plots import plot_bursts
from loadtest.report import write_results

HERE = Path(__file__).resolve().parent
BENCH_TIMEOUT_S = 900


@dataclass(frozen=True)
class Benchmark:
    key: str
    title: str
    module: str
    full_args: tuple[str, ...]
    quick_args: tuple[str, ...]
    headline: str  # the JSON field whose median picks the representative run
    runs: int = 3
    # What one invocation repeats by itself (said in the report beside the runs), so a
    # table never reads "runs: 1" where the script took medians of 3 rounds inside.
    repeats_inside: str = ""


BENCHMARKS = [
    # B1 and B5 interleave their rows and take medians of 3 rounds themselves.
    Benchmark(
        "B1",
        "admission efficiency",
        "loadtest.b1_admission",
        (),
        ("--quick",),
        "ratio",
        runs=1,
        repeats_inside="its rows interleaved over 3 rounds of 10 s; the figures are medians",
    ),
    # What securing Kafka costs: the gateway over the SASL_SSL (SCRAM-SHA-512) listener
    # of one broker beside the gateway over its PLAINTEXT listener, rows interleaved.
    Benchmark(
        "B1s",
        "admission efficiency, Kafka over SASL_SSL beside plaintext",
        "loadtest.b1_admission",
        ("--rows", "bare,gateway,gateway-sasl"),
        ("--quick", "--rows", "bare,gateway,gateway-sasl"),
        "ratio",
        runs=1,
        repeats_inside="its rows interleaved over 3 rounds of 10 s; the figures are medians",
    ),
    Benchmark(
        "B5",
        "write-path ceiling",
        "loadtest.b5_produce",
        (),
        ("--quick",),
        "gateway_over_bare_loop",
        runs=1,
        repeats_inside="its rows interleaved over 3 rounds of 10 s; the figures are medians",
    ),
    # 1 and 2 gateway workers side by side (rows interleaved, medians of 3 rounds).
    Benchmark(
        "B6",
        "scaling over gateway workers",
        "loadtest.b6_scaling",
        (),
        ("--quick",),
        "scaling",
        runs=1,
        repeats_inside="its rows interleaved over 3 rounds; the figures are medians",
    ),
    # One sale's slot on one Redis thread: admit.lua straight at redis-server.
    Benchmark(
        "B7",
        "the ceiling of one hot sale",
        "loadtest.b7_hot_sale",
        (),
        ("--quick",),
        "slot_orders_per_s",
        runs=1,
        repeats_inside="each row 3 times, interleaved; the figures are medians",
    ),
    Benchmark(
        "B2",
        "shaping a 50,000-order burst",
        "loadtest.b2_shaping",
        ("--orders", "50000", "--rate", "500", "--series-out", "{out}/b2.json"),
        ("--orders", "3000", "--rate", "500", "--series-out", "{out}/b2.json"),
        "drain_time_ratio",
        runs=1,
        repeats_inside="nothing: one burst and its drain (long: medians of 3 would triple it)",
    ),
    Benchmark(
        "B3",
        "the direct path",
        "loadtest.b3_direct",
        ("--orders", "50000", "--out", "{out}/b3.json"),
        ("--orders", "3000", "--out", "{out}/b3.json"),
        "success_share",
        runs=1,
        repeats_inside="nothing: one burst and its drain (long: medians of 3 would triple it)",
    ),
    Benchmark(
        "B4",
        "drain ceiling of one consumer",
        "loadtest.b4_drain_ceiling",
        ("--orders", "50000"),
        ("--orders", "10000"),
        "orders_per_s",
    ),
    # The same orders drained over the PLAINTEXT and the SASL_SSL listener of one broker,
    # alternately, 3 drains each (medians).
    Benchmark(
        "B4s",
        "drain ceiling of one consumer, Kafka over SASL_SSL beside plaintext",
        "loadtest.b4_drain_ceiling",
        ("--orders", "50000", "--side-by-side", "--runs", "3"),
        ("--orders", "10000", "--side-by-side", "--runs", "1"),
        "orders_per_s",
        runs=1,
        repeats_inside="3 drains over each listener, alternately; the figures are medians",
    ),
]


def run_once(
    bench: Benchmark, args: tuple[str, ...], shown: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """Run one benchmark; `shown` is `args` as the saved `_command` gives them."""
    command = [sys.executable, "-m", bench.module, *args]
    started = time.monotonic()
    proc = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT_S,
        check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    parsed = _last_json(proc.stdout)
    if proc.returncode != 0 or parsed is None:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        return {"error": f"{' '.join(command)} exited {proc.returncode}", "tail": tail}
    result: dict[str, Any] = _flatten(bench.key, parsed)
    result["_command"] = " ".join(["python", "-m", bench.module, *(shown or args)])
    result["_wall_s"] = round(time.monotonic() - started, 1)
    return result


def _last_json(stdout: str) -> dict[str, Any] | None:
    """The summary a script printed last: one JSON line, or an indented object."""
    lines = stdout.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("{"):
            try:
                value = json.loads("\n".join(lines[i:]))
            except ValueError:
                continue
            return value if isinstance(value, dict) else None
    return None


def _flatten(key: str, result: dict[str, Any]) -> dict[str, Any]:
    """Lift each script's headline figures to the top, under the report's names."""
    flat = dict(result)
    if key == "B1":
        medians = result.get("medians", {})
        flat["ratio"] = result.get("ratios", {}).get("B1 gateway/bare")
        flat["cpu_per_request_ratio"] = result.get("cpu_per_request_ratios", {}).get("gateway")
        flat["gateway_per_s"] = medians.get("gateway", {}).get("good_per_s")
        flat["bare_per_s"] = medians.get("bare", {}).get("req_per_s")
        flat["gateway_p50_ms"] = medians.get("gateway", {}).get("p50_ms")
        flat["gateway_p99_ms"] = medians.get("gateway", {}).get("p99_ms")
        flat["p99_at_80pct_ms"] = result.get("gateway_at_80pct", {}).get("p99_ms")
        flat["rows"] = {
            name: f"{m.get('good_per_s')}/s p50 {m.get('p50_ms')} ms p99 {m.get('p99_ms')} ms "
            f"cpu {m.get('server_cpu_us_per_req')} us/req"
            for name, m in medians.items()
        }
        flat["ratios"] = result.get("ratios")
    elif key == "B1s":
        medians = result.get("medians", {})
        cost = result.get("sasl_ssl_cost", {}).get("gateway-sasl", {})
        flat["ratio"] = result.get("ratios", {}).get("gateway-sasl/bare")
        flat["plaintext_ratio"] = result.get("ratios", {}).get("B1 gateway/bare")
        flat["sasl_over_plaintext"] = cost.get("good_per_s_ratio")
        flat["cpu_us_per_req_added"] = cost.get("server_cpu_us_per_req_added")
        flat["kafka_cpu_us_per_req_added"] = cost.get("kafka_cpu_us_per_req_added")
        flat["rows"] = {
            name: f"{m.get('good_per_s')}/s p50 {m.get('p50_ms')} ms p99 {m.get('p99_ms')} ms "
            f"cpu {m.get('server_cpu_us_per_req')} us/req, Kafka {m.get('kafka_cpu_us_per_req')}"
            for name, m in medians.items()
        }
        flat.pop("sasl_ssl_cost", None)
    elif key == "B4s":
        medians = result.get("medians", {})
        flat["orders_per_s"] = medians.get("sasl_ssl", {}).get("orders_per_s")
        flat["plaintext_orders_per_s"] = medians.get("plaintext", {}).get("orders_per_s")
        flat["sasl_over_plaintext"] = result.get("sasl_ssl_orders_per_s_ratio")
        flat["consumer_cpu_us_per_order_added"] = result.get(
            "sasl_ssl_consumer_cpu_us_per_order_added"
        )
        flat.pop("drains", None)
    elif key == "B6":
        medians = result.get("medians", {})
        flat["scaling"] = result.get("ratios", {}).get("scaling")
        flat["cpu_per_order_ratio"] = result.get("ratios", {}).get("server_cpu_per_order")
        flat["rows"] = {
            name: f"{m.get('accepted_per_s'):,.0f}/s p50 {m.get('p50_ms')} ms "
            f"p99 {m.get('p99_ms')} ms, gateway CPU {m.get('server_cpu_share')} "
            f"({m.get('server_cpu_us_per_order')} us/order), Redis "
            f"{m.get('redis_cpu_us_per_order')} us/order, Kafka "
            f"{m.get('kafka_cpu_us_per_order')} us/order"
            for name, m in medians.items()
        }
        flat["pinning"] = {
            name: f"gateway on CPUs {p.get('server')}, wrk on {p.get('wrk')}"
            for name, p in result.get("pinning", {}).items()
        }
    elif key == "B5":
        medians = result.get("medians", {})
        flat["bare_loop_msgs_per_s"] = medians.get("bare-loop", {}).get("msgs_per_s")
        # The gateway row of B5's own run over its bare loop: not B1 (no bare HTTP row).
        flat["gateway_over_bare_loop"] = result.get("ratios_to_bare_loop", {}).get("gateway")
        flat["rows"] = {name: m.get("msgs_per_s") for name, m in medians.items()}
    elif key == "B7":
        medians = result.get("medians", {})
        full = medians.get("admit+confirm-64", {})
        flat["slot_orders_per_s"] = full.get("ceiling_orders_per_s")
        flat["slot_cpu_us_per_order"] = full.get("redis_cpu_us_per_order")
        flat["admit_only_cpu_us_per_order"] = medians.get("admit-64", {}).get(
            "redis_cpu_us_per_order"
        )
        flat["limits_on_cpu_us_per_order"] = medians.get("admit+confirm-64-limits", {}).get(
            "redis_cpu_us_per_order"
        )
        flat["rows"] = {
            name: f"{m.get('orders_per_s'):,.0f}/s, Redis CPU {m.get('redis_cpu_share')}, "
            f"{m.get('redis_cpu_us_per_order')} us/order, "
            f"ceiling {m.get('ceiling_orders_per_s'):,.0f}/s"
            for name, m in medians.items()
        }
    elif key == "B2":
        flat["accepted_share"] = result.get("share_accepted")
        flat["peak_ratio"] = result.get("peak_over_set_rate")
        flat["drain_time_ratio"] = result.get("drain_over_ideal")
    for bulky in (
        "all_runs",
        "medians",
        "ratios_to_bare_loop",
        "cpu_per_request_ratios",
        "gateway_at_80pct",
        "machine",
        "command",
    ):
        flat.pop(bulky, None)
    return flat


def run_benchmark(bench: Benchmark, quick: bool, out: Path) -> dict[str, Any]:
    template = bench.quick_args if quick else bench.full_args
    args = tuple(a.replace("{out}", str(out)) for a in template)
    shown = tuple(a.replace("{out}", repo_relative(str(out.resolve()))) for a in template)
    runs = 1 if quick else bench.runs
    results = []
    for i in range(runs):
        print(
            f"{bench.key} run {i + 1}/{runs}: python -m {bench.module} {' '.join(args)}", flush=True
        )
        result = run_once(bench, args, shown)
        print(
            f"  -> {json.dumps({k: v for k, v in result.items() if not k.startswith('_')})[:400]}",
            flush=True,
        )
        results.append(result)
    good = [
        r for r in results if "error" not in r and isinstance(r.get(bench.headline), (int, float))
    ]
    if not good:
        return {
            "key": bench.key,
            "title": bench.title,
            "error": results[-1].get("error"),
            "tail": results[-1].get("tail"),
            "runs": results,
        }
    values = sorted(float(r[bench.headline]) for r in good)
    median = statistics.median_low(values)
    chosen = next(r for r in good if float(r[bench.headline]) == median)
    return {
        "key": bench.key,
        "title": bench.title,
        "median_of": len(good),
        "repeats_inside": "" if quick else bench.repeats_inside,
        "headline": bench.headline,
        "values": values,
        "result": chosen,
    }


def machine() -> dict[str, str]:
    def version(package: str) -> str:
        try:
            from importlib.metadata import version as v

            return v(package)
        except Exception:
            return "?"

    return {
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "os": platform.platform(),
        "kafka": "4.3.1 (KRaft, single node, from Maven Central)",
        "redis": _redis_version(),
        "packages": ", ".join(
            f"{p} {version(p)}"
            for p in (
                "starlette",
                "hypercorn",
                "uvicorn",
                "confluent-kafka",
                "redis",
                "aiohttp",
                "msgspec",
                "uvloop",
            )
        ),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _redis_version() -> str:
    try:
        out = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
        return out.split("v=")[1].split()[0] if "v=" in out else out.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one short run of each")
    parser.add_argument("--only", default="", help="comma-separated keys, e.g. B2,B3")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--report", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the report from saved summaries"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    wanted = {k.strip().upper() for k in args.only.split(",") if k.strip()}
    started = time.time()
    outcomes = {}
    for bench in BENCHMARKS:
        if args.report_only:
            saved = _load(args.out / f"{bench.key.lower()}-summary.json")
            if saved is not None:
                outcomes[bench.key] = saved
            continue
        if wanted and bench.key.upper() not in wanted:
            # Keep the last saved figures of the others, so the report stays whole.
            saved = _load(args.out / f"{bench.key.lower()}-summary.json")
            if saved is not None:
                outcomes[bench.key] = saved
            continue
        outcomes[bench.key] = run_benchmark(bench, args.quick, args.out)
        (args.out / f"{bench.key.lower()}-summary.json").write_text(
            json.dumps(outcomes[bench.key], indent=1)
        )
    b2 = _load(args.out / "b2.json")
    b3 = _load(args.out / "b3.json")
    plot = plot_bursts(b2, b3, args.out / "burst-b2-vs-b3.png")
    write_results(
        args.report,
        outcomes,
        machine(),
        plot,
        quick=args.quick,
        elapsed_s=-1.0 if args.report_only else time.time() - started,
    )
    print(f"wrote {args.report} and {plot}")


def _load(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    except (OSError, ValueError):
        return None


if __name__ == "__main__":
    main()

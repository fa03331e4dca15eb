"""B8, a flash crowd: latency and goodput when far more shoppers come than a gateway serves.

Starts Redis and one Kafka broker on free loopback ports (no drain: the gateway is
measured alone), then one server per row, and puts each through the same phases
with wrk and B1's order script (a distinct shopper per request, an open sale):

- `64`: 64 connections, sending back to back: the 1x reference, whose accepted
  orders/s (goodput) the crowds are held against;
- `1000`, `4000`: a closed-loop crowd of that many connections, back to back;
- `paced-2x`, `paced-4x`: 4,000 connections, each waiting a random think time
  between requests so that together they offer 2x and 4x the reference rate
  (wrk cannot send open loop; under overload a paced client's offer falls, so
  the offered rate actually achieved is reported beside the target);
- `after-1` ... `after-8`: 64 connections again, in 1-second slices, right after
  the crowd: how soon p99 is back under 100 ms.

Placement: on a machine of more CPUs than the row's server has workers, the server
gets the first CPUs to itself (one for a worker) and everything else (Kafka, Redis,
HAProxy, wrk, this script) the rest, so that a crowd's own cost (wrk sending
thousands of requests a second, the proxy answering its 503s) does not come out of
the server measured, as on a sale day, where the shoppers and the proxy are other
machines. `--no-pin` shares every CPU; the summary says which each row had.

Rows: `shed-off` (the gateway with `shed_lag_ms = 0`: only the in-flight cap, as
before issue 22), `shed-on` (`shed_lag_ms` = `--target-ms`), `haproxy` (the gateway
with its defaults, lag shedding off, behind Debian's haproxy running
deploy/compose/haproxy/haproxy.cfg, its addresses moved to the loopback: `maxconn` per
gateway, `timeout queue`, its tarpit, its own 503), `haproxy-no-hold` (the same with
the tarpit's 503 sent at once, a plain deny: what holding it is worth), and `floor`: B1's bare
Hypercorn + Starlette endpoint (reads the body, answers 202, no Redis or Kafka),
the cheapest answer any check inside a Hypercorn app could give; `floor-uvicorn` the
same endpoint on uvicorn + httptools (about 4x Hypercorn's rate in B1), to tell the
server's share of a crowd's latency from the machine's. Every answer
(202 and 503 alike) counts in p99; wrk's timeout is 10 s. Each gateway's `/metrics`
is read every half second for accepted and shed answers per second and its loop lag.

    .venv/bin/python -m loadtest.b8_flash_crowd --out loadtest/results/b8
    .venv/bin/python -m loadtest.b8_flash_crowd --quick     # 3 s phases

Writes `<out>.json` (summary, phases, series) and `<out>.png`; prints the summary.
`--table <out>.json` prints a saved run's phases as the Markdown table in RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import re
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import matplotlib

sys.path.insert(0, str(Path(__file__).resolve().parent))

from b1_admission import SCRIPT, load_bench_sales
from harness import REPO, Stack, command_line, pin_tree, wrk

from flashgate.stack.ports import free_port, wait_for_port
from tests.haproxy_support import HAPROXY_CFG, running_haproxy

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

WRK_TIMEOUT_S = 10.0
P99_GOAL_MS = 250.0
GOODPUT_GOAL = 0.9
RECOVERED_P99_MS = 100.0
RECOVERY_GOAL_S = 5
AFTER_SLICES = 8
SAMPLE_EVERY_S = 0.5
# Before each row's 1x reference: connections made, the batchers warm.
WARM_S = 5
# Before the first row's: a broker just started spends most of a core compiling
# (JIT) for its first half minute of load, which would depress that row's reference.
BROKER_WARM_S = 30
# HAProxy's global connection limit for the haproxy row: above the largest crowd.
PROXY_MAXCONN = 8_000
_SAMPLE = re.compile(
    r'^flashgate_gateway_requests_total\{route="/v1/orders",status="(\d+)"\} (\S+)$'
    r"|^flashgate_gateway_loop_lag_seconds (\S+)$"
    r'|^flashgate_gateway_shed_total\{signal="(\w+)"\} (\S+)$',
    re.M,
)


class MetricsSampler(threading.Thread):
    """Reads a gateway's /metrics every half second: answers by status, sheds, loop lag."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.samples: list[dict[str, Any]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(SAMPLE_EVERY_S):
            try:
                with urllib.request.urlopen(self.url, timeout=5) as answer:
                    text = answer.read().decode()
            except OSError:
                continue  # late under the crowd: the next sample covers the gap
            sample: dict[str, Any] = {"t": time.time(), "status": {}, "shed": {}, "lag_s": 0.0}
            for status, count, lag, signal, shed in _SAMPLE.findall(text):
                if status:
                    sample["status"][status] = float(count)
                elif signal:
                    sample["shed"][signal] = float(shed)
                else:
                    sample["lag_s"] = float(lag)
            self.samples.append(sample)


def _phase(name: str, url: str, seconds: float, connections: int,
           rate: float | None = None) -> dict[str, Any]:  # fmt: skip
    env = {"CONNECTIONS": str(connections)}
    if rate:
        env["RATE"] = str(round(rate))
    started = time.time()
    result = wrk(url, script=SCRIPT, seconds=seconds, connections=connections, env=env,
                 timeout_s=WRK_TIMEOUT_S)  # fmt: skip
    statuses = {int(k): v for k, v in result["statuses"].items()}
    duration = result["duration_s"]
    answered = sum(statuses.values())
    return {
        "phase": name,
        "connections": connections,
        "target_rate": round(rate) if rate else None,
        "started": started,
        "ended": time.time(),
        "offered_per_s": round((answered + result["timeouts"]) / duration, 1),
        "goodput_per_s": round(statuses.get(202, 0) / duration, 1),
        "shed_per_s": round(statuses.get(503, 0) / duration, 1),
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "max_ms": result["max_ms"],
        "timeouts": result["timeouts"],
        "errors": result["errors"],
        "statuses": result["statuses"],
    }


def run_row(url: str, metrics_url: str | None, seconds: float, warm_s: float) -> dict[str, Any]:
    sampler = MetricsSampler(metrics_url) if metrics_url else None
    wrk(url, script=SCRIPT, seconds=warm_s, connections=64)
    if sampler:
        sampler.start()
    phases = [_phase("64", url, seconds, 64)]
    reference = phases[0]["goodput_per_s"]
    for connections in (1000, 4000):
        phases.append(_phase(str(connections), url, round(seconds * 1.5), connections))
    phases += [_phase(f"after-{i + 1}", url, 1, 64) for i in range(AFTER_SLICES)]
    for times in (2, 4):
        phases.append(_phase(f"paced-{times}x", url, round(seconds * 1.5), 4000, reference * times))
    phases += [_phase(f"paced-after-{i + 1}", url, 1, 64) for i in range(AFTER_SLICES)]
    if sampler:
        sampler.stopping.set()
        sampler.join()
    return {
        "phases": phases,
        "reference_goodput_per_s": reference,
        "samples": sampler.samples if sampler else [],
        "verdict": verdict(phases, reference),
    }


def _recovery_s(phases: list[dict[str, Any]], prefix: str) -> int | None:
    """Seconds after the crowd until a 1-s slice's p99 is under 100 ms (None: never). A
    slice with no answer at all (the server still busy with the crowd) is not one."""
    for phase in phases:
        if (
            phase["phase"].startswith(prefix)
            and phase["statuses"]
            and phase["p99_ms"] < RECOVERED_P99_MS
        ):
            return int(phase["phase"].rsplit("-", 1)[1]) - 1
    return None


def verdict(phases: list[dict[str, Any]], reference: float) -> dict[str, Any]:
    crowd = [p for p in phases if p["phase"] in ("1000", "4000", "paced-2x", "paced-4x")]
    return {
        "per_crowd": {
            p["phase"]: {
                "p99_ms": p["p99_ms"],
                "p99_ok": p["p99_ms"] <= P99_GOAL_MS,
                "goodput_share": round(p["goodput_per_s"] / reference, 3) if reference else None,
                "goodput_ok": p["goodput_per_s"] >= GOODPUT_GOAL * reference,
                "timeouts": p["timeouts"],
            }
            for p in crowd
        },
        "recovery_s_closed": _recovery_s(phases, "after-"),
        "recovery_s_paced": _recovery_s(phases, "paced-after-"),
    }


def _start_gateway(stack: Stack, name: str, workers: int, shed_ms: int) -> tuple[str, str, int]:
    process, port, _ = stack.start_gateway(
        FLASHGATE_GATEWAY_WORKERS=str(workers), FLASHGATE_GATEWAY_SHED_LAG_MS=str(shed_ms)
    )
    process.name = name
    assert process.pid is not None
    base = f"http://127.0.0.1:{port}"
    return f"{base}/v1/orders", f"{base}/metrics", process.pid


def without_hold(shipped: str) -> str:
    """The shipped HAProxy file with its tarpit answering at once (a plain deny)."""
    held = "http-request tarpit deny_status 503"
    assert held in shipped, "haproxy.cfg no longer has the tarpit this row replaces"
    return shipped.replace(held, "http-request deny deny_status 503")


def _start_proxied(stack: Stack, workers: int, proxy: contextlib.ExitStack,
                   shipped: str) -> tuple[str, str, int]:  # fmt: skip
    """A gateway behind the shipped HAProxy configuration (its queue and 503s)."""
    process, port, admin_port = stack.start_gateway(
        FLASHGATE_GATEWAY_WORKERS=str(workers), FLASHGATE_GATEWAY_SHED_LAG_MS="0"
    )
    assert process.pid is not None
    servers = {"gateways": [port], "gateway_admin": [admin_port]}
    running = proxy.enter_context(
        running_haproxy(stack.root / "haproxy", servers, PROXY_MAXCONN, shipped)
    )
    return f"{running.url('public')}/v1/orders", f"http://127.0.0.1:{port}/metrics", process.pid


def _start_floor(stack: Stack, server: str) -> tuple[str, int]:
    port = free_port()
    process = stack.start("floor", [sys.executable, str(REPO / "loadtest" / "bare_app.py"),
                                    "--port", str(port), "--server", server], port)  # fmt: skip
    wait_for_port("floor", "127.0.0.1", port, 30)
    assert process.pid is not None
    return f"http://127.0.0.1:{port}/v1/orders", process.pid


def place(server_pid: int, workers: int, cpus: list[int]) -> dict[str, str]:
    """The server measured onto the first `workers` of `cpus`; everything else this
    script started (Kafka, Redis, HAProxy, and wrk, started later: it inherits this
    script's mask) onto the rest. Nothing is pinned when the server needs every CPU."""
    if workers < 1 or len(cpus) <= workers:
        return {"server": "unpinned", "others": "unpinned"}
    server, others = set(cpus[:workers]), set(cpus[workers:])
    pin_tree(os.getpid(), others)
    pin_tree(server_pid, server)
    return {"server": _cpu_list(server), "others": _cpu_list(others)}


def _cpu_list(cpus: set[int]) -> str:
    return ",".join(str(cpu) for cpu in sorted(cpus))


def plot(rows: dict[str, dict[str, Any]], out: Path) -> Path:
    """Per row: accepted and shed answers per second (from /metrics), loop lag, and
    each phase's p99 as a step (from wrk)."""
    gateway_rows = {name: row for name, row in rows.items() if row["samples"]}
    fig, axes = plt.subplots(len(gateway_rows), 1, figsize=(12, 4.2 * len(gateway_rows)),
                             squeeze=False)  # fmt: skip
    for axis, (name, row) in zip(axes[:, 0], gateway_rows.items(), strict=True):
        samples = row["samples"]
        start = row["phases"][0]["started"]
        times, accepted, shed = [], [], []
        for before, after in itertools.pairwise(samples):
            span = after["t"] - before["t"]
            times.append(after["t"] - start)
            accepted.append((after["status"].get("202", 0) - before["status"].get("202", 0)) / span)
            shed.append((after["status"].get("503", 0) - before["status"].get("503", 0)) / span)
        axis.plot(times, accepted, label="202 accepted /s", color="tab:green")
        axis.plot(times, shed, label="503 shed /s", color="tab:red")
        offered_x, offered_y = [], []
        for phase in row["phases"]:
            offered_x += [phase["started"] - start, phase["ended"] - start]
            offered_y += [phase["offered_per_s"]] * 2
        axis.plot(offered_x, offered_y, label="offered /s (wrk)", color="tab:gray", ls=":")
        axis.set_ylabel("answers per second")
        axis.set_title(f"B8 {name}: phases " + ", ".join(
            p["phase"] for p in row["phases"] if not p["phase"].count("after-")))  # fmt: skip
        p99 = axis.twinx()
        p99_x, p99_y = [], []
        for phase in row["phases"]:
            p99_x += [phase["started"] - start, phase["ended"] - start]
            p99_y += [phase["p99_ms"]] * 2
        p99.plot(p99_x, p99_y, label="p99 ms (wrk, per phase)", color="tab:blue")
        p99.axhline(P99_GOAL_MS, color="tab:blue", ls="--", lw=0.8)
        p99.set_yscale("log")
        p99.set_ylabel("p99 ms (log)")
        lines = axis.get_legend_handles_labels()
        more = p99.get_legend_handles_labels()
        axis.legend(lines[0] + more[0], lines[1] + more[1], loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("seconds since the first phase")
    fig.tight_layout()
    path = out.with_suffix(".png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def markdown(summary: dict[str, Any]) -> str:
    """The crowd phases of each row as one Markdown table (RESULTS.md's B8 section)."""
    lines = [
        "| row | phase | offered/s | 202/s (share of 1x) | 503/s | p50 ms | p99 ms | timeouts |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in summary["rows"].items():
        reference = row["reference_goodput_per_s"]
        for phase in row["phases"]:
            if "after-" in phase["phase"]:
                continue
            share = phase["goodput_per_s"] / reference if reference else 0.0
            lines.append(
                f"| {name} | {phase['phase']} | {phase['offered_per_s']:,.0f} | "
                f"{phase['goodput_per_s']:,.0f} ({share:.2f}) | {phase['shed_per_s']:,.0f} | "
                f"{phase['p50_ms']:,.0f} | {phase['p99_ms']:,.0f} | {phase['timeouts']} |"
            )
        verdict = row["verdict"]
        lines.append(
            f"| {name} | recovery: s until p99 < 100 ms | after the closed crowds "
            f"{verdict['recovery_s_closed']}, after the paced ones "
            f"{verdict['recovery_s_paced']} | | | | | |"
        )
        if "cpus" in row:  # runs before placement existed did not record it
            lines.append(
                f"| {name} | CPUs | server {row['cpus']['server']}; Kafka, Redis, wrk, proxy "
                f"{row['cpus']['others']} | | | | | |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "loadtest" / "results" / "b8")
    parser.add_argument("--quick", action="store_true", help="3 s phases")
    parser.add_argument("--seconds", type=float, default=10.0, help="the 1x phase; crowds 1.5x")
    parser.add_argument(
        "--rows", default="shed-off,shed-on,haproxy,haproxy-no-hold,floor,floor-uvicorn"
    )
    parser.add_argument("--workers", type=int, default=1, help="gateway workers (0 = per CPU)")
    parser.add_argument("--target-ms", type=int, default=50, help="shed_lag_ms of shed-on")
    parser.add_argument("--no-pin", action="store_true", help="share every CPU (see Placement)")
    parser.add_argument("--table", type=Path, help="print a saved run's table (<out>.json)")
    args = parser.parse_args()
    if args.table:
        print(markdown(json.loads(args.table.read_text())))
        return
    seconds = 3.0 if args.quick else args.seconds
    cpus = sorted(os.sched_getaffinity(0))
    rows: dict[str, dict[str, Any]] = {}
    with Stack() as stack:
        assert stack.redis is not None
        asyncio.run(load_bench_sales(stack.redis.url))
        for name in args.rows.split(","):
            with contextlib.ExitStack() as proxy:
                metrics_url: str | None = None
                workers = args.workers
                if name in ("floor", "floor-uvicorn"):
                    server = "uvicorn" if name == "floor-uvicorn" else "hypercorn"
                    url, pid = _start_floor(stack, server)
                    workers = 1
                elif name in ("haproxy", "haproxy-no-hold"):
                    shipped = HAPROXY_CFG.read_text()
                    if name == "haproxy-no-hold":
                        shipped = without_hold(shipped)
                    url, metrics_url, pid = _start_proxied(stack, workers, proxy, shipped)
                else:
                    shed_ms = 0 if name == "shed-off" else args.target_ms
                    url, metrics_url, pid = _start_gateway(stack, name, workers, shed_ms)
                cpus_used = place(pid, workers, [] if args.no_pin else cpus)
                warm_s = WARM_S if rows else BROKER_WARM_S
                rows[name] = {**run_row(url, metrics_url, seconds, warm_s), "cpus": cpus_used}
            for process in list(stack.processes):
                stack.stop(process)
    summary = {
        "benchmark": "B8 flash crowd",
        "command": command_line("loadtest.b8_flash_crowd"),
        "workers": args.workers,
        "target_ms": args.target_ms,
        "seconds": seconds,
        "machine": {"python": platform.python_version()},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": {
            name: {
                "reference_goodput_per_s": row["reference_goodput_per_s"],
                "cpus": row["cpus"],
                "verdict": row["verdict"],
                "phases": [
                    {k: v for k, v in p.items() if k not in ("started", "ended")}
                    for p in row["phases"]
                ],
            }
            for name, row in rows.items()
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({**summary, "series": rows}, indent=1))
    plot(rows, args.out)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

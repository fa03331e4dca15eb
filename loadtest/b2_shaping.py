"""B2, shaping: a burst of orders as fast as the generator goes; the backend gets them at the rate.

Starts Redis, one Kafka broker, the reference backend (capacity `--backend-rate`,
by default 4 x `--rate`, so the peak measured is the drain's own shaping and not
the backend's limiter; 64 at once, 1 s wait), the gateway (one sale loaded with
ample stock and no admission rate limits, so the burst itself is what is
measured) and one consumer draining
at `--rate` with `--burst`. The burst comes from `loadtest.burst.fire` (aiohttp,
many kept-alive connections). Reports:

- share accepted of the orders sent (a 202, or a `503 outcome_unknown` whose
  status the client then read accepted: see `loadtest.burst`), and the
  outcome_unknown answers with what they settled to,
- highest 1-second backend rate / set rate (goal <= 1.05),
- drain time / ideal (goal <= 1.05): from the burst's first request to the
  backend storing the last accepted order, against accepted / rate,
- lost (accepted, never stored; goal 0) and duplicated (redeliveries the backend
  refused by Idempotency-Key; goal 0; stored twice is impossible by its key),
- the backend's 503s for want of capacity (goal 0: the drain never outran it),
- CPU per process over the run.

    .venv/bin/python -m loadtest.b2_shaping --orders 50000 --rate 500

Prints one JSON summary; bounded by --timeout-s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from flashgate.drain import progress
from flashgate.stack.ports import free_port
from flashgate.stack.process import ManagedProcess
from loadtest.b4_drain_ceiling import infra_pids
from loadtest.burst import fire, order_body
from loadtest.harness import Stack, cpu_seconds, load_sale

SALE_ID = "b2"
SKUS = 4
OPEN_RATE = {"per_second": 0, "burst": 1}


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def _partitions_owned(redis_url: str, group_id: str) -> int:
    """How many partitions the drain's consumers report (they report only what they own)."""

    async def read() -> int:
        redis = Redis.from_url(redis_url)
        try:
            state = await progress.read(redis, group_id)
            return len(state.end_offsets) if state is not None and state.consumers else 0
        finally:
            await redis.aclose()

    return asyncio.run(read())


def run(args: argparse.Namespace) -> dict[str, Any]:
    with Stack(partitions=args.partitions, keep=args.keep) as stack:
        port = free_port()
        backend_rate = args.backend_rate or 4 * args.rate
        db = stack.root / "backend.sqlite3"
        backend = stack.start(
            "backend",
            [
                sys.executable, "-m", "reference_backend", "--port", str(port), "--db", str(db),
                "--rate", str(backend_rate), "--concurrency", "64", "--max-wait", "1.0",
            ],
            port,
        )  # fmt: skip
        backend_url = f"http://127.0.0.1:{port}"
        group_id = f"b2-{os.getpid()}"
        drain = {
            "FLASHGATE_DRAIN_BACKEND_URL": backend_url,
            "FLASHGATE_DRAIN_GROUP_ID": group_id,
            "FLASHGATE_DRAIN_RATE_PER_S": str(args.rate),
            "FLASHGATE_DRAIN_BURST": str(args.burst),
        }
        gateway, gateway_port, admin_port = stack.start_gateway(**drain)
        stock = {f"SKU-{i + 1}": args.orders * 10 for i in range(SKUS)}
        rates = {"sale": OPEN_RATE, "user": OPEN_RATE, "ip": OPEN_RATE}
        load_sale(admin_port, SALE_ID, {"stock": stock, "per_user_max": 0, "rates": rates})

        env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHGATE_")}
        env.update(stack.variables(**drain))
        consumer = ManagedProcess(
            "consumer", [sys.executable, "-m", "order_consumer.main"],
            log_path=stack.root / "consumer.log", env=env, cwd=Path.cwd(),
        )  # fmt: skip
        consumer.start()
        stack.processes.append(consumer)
        redis_url = stack.variables()["FLASHGATE_REDIS_URL"]
        # Joined and assigned before the burst (a fresh broker creates its offsets topic
        # on the first join, which takes a few seconds).
        deadline = time.monotonic() + 30
        while _partitions_owned(redis_url, group_id) < args.partitions:
            if time.monotonic() > deadline or not consumer.running():
                raise RuntimeError(f"consumer did not report:\n{consumer.log_tail(30)}")
            time.sleep(0.2)

        pids = {
            "gateway": gateway.pid, "consumer": consumer.pid, "backend": backend.pid,
            **infra_pids(stack),
        }  # fmt: skip
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items() if pid}
        started = time.monotonic()
        burst = asyncio.run(
            fire(
                f"http://127.0.0.1:{gateway_port}/v1/orders",
                args.orders,
                connections=args.connections,
                body=lambda i: order_body(i, SALE_ID, SKUS),
            )
        )
        burst_s = burst.finished_at - burst.started_at
        accepted = burst.accepted_order_ids

        deadline = time.monotonic() + args.timeout_s
        stats = _get(f"{backend_url}/stats")
        while stats["orders"] < len(accepted) and time.monotonic() < deadline:
            time.sleep(0.5)
            stats = _get(f"{backend_url}/stats")
        time.sleep(1.0)  # redeliveries, if any, show up in `duplicates`
        stats = _get(f"{backend_url}/stats")
        wall = time.monotonic() - started
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items() if pid}

        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT order_id, stored_at FROM orders").fetchall()
        stored = {order_id for order_id, _ in rows}
        last_stored = max((at for _, at in rows), default=burst.started_at)
        first_stored = min((at for _, at in rows), default=burst.started_at)
        per_second = {int(k): v for k, v in stats["per_second"].items()}
        peak = max(per_second.values(), default=0)
        drain_s = last_stored - burst.started_at
        ideal_s = len(accepted) / args.rate
        summary = {
            "benchmark": "B2 shaping",
            "orders": args.orders,
            "rate_per_s": args.rate,
            "drain_burst": args.burst,
            "backend_capacity_per_s": backend_rate,
            "backend_refused_overloaded": stats.get("refused_overloaded"),
            "statuses": {str(k): v for k, v in sorted(burst.statuses.items())},
            "outcome_unknown": burst.outcome_unknown(),
            "share_accepted": round(len(accepted) / args.orders, 4),
            "burst_s": round(burst_s, 2),
            "burst_orders_per_s": round(args.orders / burst_s, 1) if burst_s > 0 else None,
            "peak_1s_backend_rate": peak,
            "peak_over_set_rate": round(peak / args.rate, 3),
            "goal_peak_over_set_rate": 1.05,
            "drain_s": round(drain_s, 2),
            "ideal_drain_s": round(ideal_s, 2),
            "drain_over_ideal": round(drain_s / ideal_s, 3) if ideal_s else None,
            "goal_drain_over_ideal": 1.05,
            "first_delivery_after_s": round(first_stored - burst.started_at, 2),
            # The same without the time to the first delivery (noticeable on short runs).
            "drain_over_ideal_from_first_delivery": (
                round((last_stored - first_stored) / ((len(accepted) - 1) / args.rate), 3)
                if len(accepted) > 1
                else None
            ),
            "lost": len(accepted - stored),
            "stored_not_accepted": len(stored - accepted),
            "duplicated": stats["duplicates"],
            "cpu_share_of_one_core": {
                name: round(seconds_used / wall, 2) for name, seconds_used in cpu.items()
            },
            "timed_out": stats["orders"] < len(accepted),
            "cpus": os.cpu_count(),
        }
        if args.keep:
            summary["dir"] = str(stack.root)
        if args.series_out:
            series = {
                "start": int(burst.started_at),
                "offered": _series(burst.per_second(lambda s: True, sent=True)),
                "accepted": _series(burst.per_second(lambda s: s == 202)),
                "backend": _series(per_second),
            }
            Path(args.series_out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.series_out).write_text(json.dumps({**summary, "series": series}))
        return summary


def _series(counts: dict[int, int]) -> dict[str, int]:
    return {str(k): v for k, v in sorted(counts.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=500.0, help="the drain's rate")
    parser.add_argument(
        "--backend-rate", type=float, default=0.0, help="backend capacity (0: 4 x --rate)"
    )
    parser.add_argument("--burst", type=int, default=10, help="drain burst (orders above rate*t)")
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--timeout-s", type=float, default=180.0, help="bound on the drain wait")
    parser.add_argument("--keep", action="store_true", help="keep logs and data")
    parser.add_argument("--out", help="also write the JSON summary here")
    parser.add_argument("--series-out", help="write the summary with per-second series here")
    args = parser.parse_args()
    summary = run(args)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()

"""B3, the direct path: the burst sent straight to the backend, as a storefront without flashgate.

Shoppers arrive open-loop at --offered-rate. The reference backend runs at its
real capacity (default 500 orders/s, 64 at once, an order waits at most 1 s for
capacity, else 503). Reports the success share, the p99 latency, backend errors,
and per-second series for the plot beside B2.

    .venv/bin/python -m loadtest.b3_direct --orders 50000 --out .flashgate/bench/b3.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from flashgate.stack.ports import free_port, wait_for_port
from flashgate.stack.process import ManagedProcess
from loadtest.burst import fire


def run(
    orders: int, capacity: float, concurrency: int, connections: int, offered_rate: float
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="flashgate-b3-") as tmp:
        port = free_port()
        backend = ManagedProcess(
            "backend",
            [
                sys.executable, "-m", "reference_backend", "--port", str(port),
                "--db", f"{tmp}/orders.sqlite3", "--rate", str(capacity),
                "--concurrency", str(concurrency), "--max-wait", "1.0",
            ],
            log_path=Path(tmp) / "backend.log",
        )  # fmt: skip
        backend.start()
        try:
            wait_for_port("backend", "127.0.0.1", port, 30)
            base = f"http://127.0.0.1:{port}"
            result = asyncio.run(
                fire(
                    f"{base}/orders",
                    orders,
                    connections=connections,
                    direct_backend=True,
                    offered_rate=offered_rate,
                )
            )
            time.sleep(0.5)
            with urllib.request.urlopen(f"{base}/stats", timeout=10) as response:
                stats = json.loads(response.read())
        finally:
            backend.stop()

    def ok(status: int) -> bool:
        return 200 <= status < 300

    stored_per_second = {int(k): v for k, v in stats["per_second"].items()}
    elapsed = result.finished_at - result.started_at
    return {
        "benchmark": "B3 direct path",
        "orders": orders,
        "backend_capacity_per_s": capacity,
        "connections": connections,
        "offered_rate_set_per_s": offered_rate,
        "success_share": result.share(ok),
        "backend_errors": sum(1 for a in result.answers if a.status >= 500),
        "no_answer": sum(1 for a in result.answers if a.status == 0),
        "statuses": {str(k): v for k, v in sorted(result.statuses.items())},
        "p50_s": result.latency_quantile(0.50, lambda s: s > 0),
        "p99_s": result.latency_quantile(0.99, lambda s: s > 0),
        "p99_success_s": result.latency_quantile(0.99, ok),
        "elapsed_s": elapsed,
        "offered_per_s": orders / elapsed if elapsed else None,
        "stored": stats["orders"],
        "highest_backend_second": max(stored_per_second.values(), default=0),
        "series": {
            "start": int(result.started_at),
            "offered": _series(result.per_second(lambda s: True, sent=True)),
            "succeeded": _series(result.per_second(ok)),
            "failed": _series(result.per_second(lambda s: not ok(s))),
            "backend": _series(stored_per_second),
        },
    }


def _series(counts: dict[int, int]) -> dict[str, int]:
    return {str(k): v for k, v in sorted(counts.items())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=50_000)
    parser.add_argument("--capacity", type=float, default=500.0, help="backend orders/s")
    parser.add_argument("--concurrency", type=int, default=64, help="backend parallelism")
    parser.add_argument("--connections", type=int, default=2048, help="max in flight")
    parser.add_argument(
        "--offered-rate", type=float, default=2000.0, help="shoppers arriving per s (open loop)"
    )
    parser.add_argument("--quick", action="store_true", help="5,000 orders")
    parser.add_argument("--out", type=Path, help="write the full JSON (with series) here")
    args = parser.parse_args(argv)
    orders = 5_000 if args.quick else args.orders
    summary = run(orders, args.capacity, args.concurrency, args.connections, args.offered_rate)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "series"}))


if __name__ == "__main__":
    main()

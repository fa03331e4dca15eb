"""Who wins a sale's opening: the winners' arrival ranks with and without a fair start.

Starts Redis, a Kafka broker and one gateway, loads two sales with the same stock that
open a few seconds ahead by Redis's clock, one with `fair_start_ms` and one without,
and at each opening sends `--orders` orders open-loop, all inside the window (each
from its own user). Reports, per sale, how the 202s spread over arrival order (the
rank of each request's send time, in tenths), the chi-square of that spread against
an even one (9 degrees of freedom: above 21.7 happens by chance 1 time in 100), and
the answers' latency (the fair start holds each request until its draw).

    .venv/bin/python -m loadtest.fair_start --orders 1000 --stock 100 --window-ms 2000

Prints one JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import redis

from loadtest.burst import fire
from loadtest.harness import Stack, command_line, load_sale

OPEN = {"per_second": 0, "burst": 1}
LEAD_S = 3.0  # a sale opens this long after it is loaded
CHI2_9DF_P001 = 21.666


def _redis_now_s(url: str) -> float:
    client = redis.Redis.from_url(url)
    try:
        seconds, micros = client.time()
    finally:
        client.close()
    return float(seconds) + micros / 1e6


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")


def _one_opening(
    stack: Stack, gateway_url: str, admin_port: int, args: argparse.Namespace, window_ms: int
) -> dict[str, Any]:
    sale_id = f"opening-{window_ms}"
    redis_url = stack.variables()["FLASHGATE_REDIS_URL"]
    opens = _redis_now_s(redis_url) + LEAD_S
    load_sale(admin_port, sale_id, {
        "stock": {"A": args.stock}, "per_user_max": 0,
        "rates": {"sale": OPEN, "user": OPEN, "ip": OPEN},
        "opens_at": _iso(opens), "fair_start_ms": window_ms,
    })  # fmt: skip
    # The opening is a moment on Redis's clock; nothing signals it.
    time.sleep(max(0.0, opens - _redis_now_s(redis_url)) + 0.005)
    # Every request leaves in the first part of the window, so that it also reaches
    # admission inside it on a busy machine (a request judged after the window is
    # admitted on arrival, after the draw).
    spread_s = args.spread * args.window_ms / 1000

    def body(i: int) -> dict[str, object]:
        return {"sale_id": sale_id, "sku": "A", "quantity": 1, "user_id": f"u{i}"}

    burst = asyncio.run(
        fire(f"{gateway_url}/v1/orders", args.orders, body=body, connections=args.orders,
             offered_rate=args.orders / spread_s)
    )  # fmt: skip
    by_arrival = sorted(burst.answers, key=lambda answer: answer.sent_at)
    winners = [rank for rank, answer in enumerate(by_arrival) if answer.status == 202]
    tenths = [0] * 10
    for rank in winners:
        tenths[rank * 10 // len(by_arrival)] += 1
    expected = len(winners) / 10
    chi2 = sum((n - expected) ** 2 / expected for n in tenths) if winners else None
    latencies = sorted(answer.latency_s * 1000 for answer in burst.answers)
    return {
        "fair_start_ms": window_ms,
        "statuses": {str(k): v for k, v in sorted(Counter(a.status for a in by_arrival).items())},
        "sent_within_s": round(by_arrival[-1].sent_at - by_arrival[0].sent_at, 3),
        "winners_by_arrival_tenth": tenths,
        "chi2_vs_even": round(chi2, 2) if chi2 is not None else None,
        "even_at_p001": chi2 is not None and chi2 < CHI2_9DF_P001,
        "mean_winner_rank": round(statistics.mean(winners), 1) if winners else None,
        "p50_ms": round(latencies[len(latencies) // 2], 1),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--stock", type=int, default=100)
    parser.add_argument("--window-ms", type=int, default=2000)
    parser.add_argument(
        "--spread", type=float, default=0.5, help="send over this share of the window"
    )
    args = parser.parse_args()
    with Stack() as stack:
        _, port, admin_port = stack.start_gateway()
        url = f"http://127.0.0.1:{port}"
        rows = [
            _one_opening(stack, url, admin_port, args, args.window_ms),
            _one_opening(stack, url, admin_port, args, 0),
        ]
    print(json.dumps({
        "benchmark": "fair start: winners by arrival",
        "command": command_line("loadtest.fair_start"),
        "orders": args.orders, "stock": args.stock,
        "at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "fair": rows[0], "first_come": rows[1],
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()

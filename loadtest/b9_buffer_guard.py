"""B9, the buffer guard: a sale bigger than the drain can deliver within the retention.

Starts Redis, one Kafka broker, the reference backend (no capacity limit), the
gateway and one consumer draining at `--drain-rate`, with the orders topic's
retention `--retention-s` and `[gateway] buffer_safety_s` `--safety-s`. Shoppers
arrive at `--rush-rate` orders/s for `--rush-s` seconds (more than the drain), then
at `--tail-rate` for `--tail-s` (less): the guard closes once an order admitted now
would be delivered after retention - safety, lets the drain's pace through, and
opens again as the backlog shrinks. Sampled every half second from
`GET /admin/v1/drain`: backlog, the projected delivery of an order admitted now,
headroom; per second from the generator: 202s and 503 `backlog_full`. At the end
every 202 is reconciled against the backend's table.

    .venv/bin/python -m loadtest.b9_buffer_guard --out loadtest/results/b9

Writes `<out>.json` (summary and series) and `<out>.png`; prints the summary.
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
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import matplotlib

from flashgate.stack.ports import free_port
from flashgate.stack.process import ManagedProcess
from loadtest.harness import ADMIN_TOKEN, Stack, command_line, load_sale

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

SALE_ID = "b9"
OPEN_RATE = {"per_second": 0, "burst": 1}
CONNECTIONS = 64


def _drain(admin_port: int) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{admin_port}/admin/v1/drain",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


async def _shoppers(url: str, args: argparse.Namespace, t0: float) -> dict[str, Any]:
    """Paced arrivals; each order answered once (no retries: the refusals are counted)."""
    accepted: list[str] = []
    per_second: dict[str, Counter[int]] = {"accepted": Counter(), "backlog_full": Counter()}
    retry_after: list[int] = []
    other: Counter[int] = Counter()
    plan = [i / args.rush_rate for i in range(int(args.rush_rate * args.rush_s))]
    plan += [args.rush_s + i / args.tail_rate for i in range(int(args.tail_rate * args.tail_s))]
    gate = asyncio.Semaphore(CONNECTIONS)
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        body = {"sale_id": SALE_ID, "sku": "A", "quantity": 1, "user_id": f"u{i}"}
        async with gate, session.post(url, json=body) as response:
            second = int(time.time() - t0)
            answer = await response.json()
            if response.status == 202:
                accepted.append(answer["order_id"])
                per_second["accepted"][second] += 1
            elif answer.get("error") == "backlog_full":
                per_second["backlog_full"][second] += 1
                retry_after.append(int(response.headers["Retry-After"]))
            else:
                other[response.status] += 1

    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = []
        for i, at in enumerate(plan):
            ahead = t0 + at - time.time()
            if ahead > 0:
                await asyncio.sleep(ahead)
            tasks.append(asyncio.create_task(one(session, i)))
        await asyncio.gather(*tasks)
    return {
        "accepted": accepted,
        "per_second": {k: dict(v) for k, v in per_second.items()},
        "retry_after": retry_after,
        "other": dict(other),
        "sent": len(plan),
    }


async def _sample(admin_port: int, t0: float, stop: asyncio.Event) -> list[dict[str, Any]]:
    samples = []
    while not stop.is_set():
        drain = await asyncio.to_thread(_drain, admin_port)
        buffer = drain.get("buffer") or {}
        samples.append({
            "t": time.time() - t0,
            "backlog": drain["backlog"],
            "admitted_delivered_in_s": buffer.get("admitted_delivered_in_s"),
            "headroom_s": buffer.get("headroom_s"),
            "oldest_age_s": buffer.get("oldest_age_s"),
        })  # fmt: skip
        await asyncio.sleep(0.5)
    return samples


async def _run_load(url: str, admin_port: int, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.time()
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample(admin_port, t0, stop))
    shoppers = await _shoppers(url, args, t0)
    # Keep sampling until the drain delivered everything accepted.
    deadline = time.monotonic() + args.timeout_s
    while time.monotonic() < deadline:
        if (await asyncio.to_thread(_drain, admin_port))["backlog"] == 0:
            break
        await asyncio.sleep(0.5)
    stop.set()
    shoppers["samples"] = await sampler
    return shoppers


def _stored(db: Path) -> set[str]:
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return {row[0] for row in connection.execute("SELECT order_id FROM orders")}
    finally:
        connection.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    with Stack(keep=args.keep) as stack:
        port = free_port()
        db = stack.root / "backend.sqlite3"
        stack.start(
            "backend",
            [sys.executable, "-m", "reference_backend", "--port", str(port), "--db", str(db),
             "--rate", "0"],
            port,
        )  # fmt: skip
        settings = {
            "FLASHGATE_DRAIN_BACKEND_URL": f"http://127.0.0.1:{port}",
            "FLASHGATE_DRAIN_GROUP_ID": f"b9-{os.getpid()}",
            "FLASHGATE_DRAIN_RATE_PER_S": str(args.drain_rate),
            "FLASHGATE_DRAIN_BURST": "10",
            "FLASHGATE_KAFKA_RETENTION_MS": str(int(args.retention_s * 1000)),
            "FLASHGATE_GATEWAY_BUFFER_SAFETY_S": str(args.safety_s),
        }
        _, gateway_port, admin_port = stack.start_gateway(**settings)
        load_sale(admin_port, SALE_ID, {"stock": {"A": 10**9}, "rates": {
            "sale": OPEN_RATE, "user": OPEN_RATE, "ip": OPEN_RATE}})  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHGATE_")}
        env.update(stack.variables(**settings))
        consumer = ManagedProcess(
            "consumer", [sys.executable, "-m", "order_consumer.main"],
            log_path=stack.root / "consumer.log", env=env, cwd=Path.cwd(),
        )  # fmt: skip
        consumer.start()
        stack.processes.append(consumer)
        deadline = time.monotonic() + 60
        while _drain(admin_port)["consumers"] < 1:
            if time.monotonic() > deadline or not consumer.running():
                raise RuntimeError(f"consumer did not report:\n{consumer.log_tail(30)}")
            time.sleep(0.2)
        url = f"http://127.0.0.1:{gateway_port}/v1/orders"
        load = asyncio.run(_run_load(url, admin_port, args))
        stored = _stored(db)
        drain = _drain(admin_port)
    accepted = load.pop("accepted")
    samples = load["samples"]
    projected = [s["admitted_delivered_in_s"] for s in samples if s["admitted_delivered_in_s"]]
    return {
        "benchmark": "B9",
        "command": command_line("loadtest.b9_buffer_guard"),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "drain_rate": args.drain_rate,
        "retention_s": args.retention_s,
        "safety_s": args.safety_s,
        "limit_s": args.retention_s - args.safety_s,
        "sent": load["sent"],
        "accepted": len(accepted),
        "backlog_full": len(load["retry_after"]),
        "other_answers": load["other"],
        "accepted_not_delivered": len(set(accepted) - stored),
        "lost_orders": drain["lost_orders"],
        "highest_projected_delivery_s": max(projected, default=None),
        "retry_after_s": {
            "min": min(load["retry_after"], default=None),
            "max": max(load["retry_after"], default=None),
        },
        "series": {"per_second": load["per_second"], "samples": samples},
    }


def plot(result: dict[str, Any], out: Path) -> Path:
    samples = result["series"]["samples"]
    t = [s["t"] for s in samples]
    fig, axes = plt.subplots(3, 1, figsize=(11, 9), sharex=True)
    axes[0].plot(t, [s["backlog"] for s in samples], color="#6a1b9a")
    axes[0].set_ylabel("backlog (orders)")
    delivered = [s["admitted_delivered_in_s"] for s in samples]
    axes[1].plot(t, [d if d is not None else float("nan") for d in delivered], color="#1565c0",
                 label="projected delivery of an order admitted now")  # fmt: skip
    axes[1].axhline(result["retention_s"], color="#c62828", label="retention")
    axes[1].axhline(result["limit_s"], color="#ef6c00", linestyle="--",
                    label="retention - buffer_safety_s (the guard's line)")  # fmt: skip
    axes[1].set_ylabel("seconds")
    axes[1].legend(loc="upper right", fontsize=8)
    per_second = result["series"]["per_second"]
    span = range(0, int(max(t, default=0)) + 1)
    for key, colour in (("accepted", "#2e7d32"), ("backlog_full", "#c62828")):
        counts = {int(k): v for k, v in per_second[key].items()}
        label = "202 accepted/s" if key == "accepted" else "503 backlog_full/s"
        axes[2].plot(list(span), [counts.get(s, 0) for s in span], color=colour, label=label)
    axes[2].set_ylabel("answers / s")
    axes[2].set_xlabel("seconds since the sale opened")
    axes[2].legend(loc="upper right", fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"B9: drain {result['drain_rate']:g}/s, retention {result['retention_s']:g} s, "
        f"buffer_safety_s {result['safety_s']:g}"
    )
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drain-rate", type=float, default=40.0)
    parser.add_argument("--retention-s", type=float, default=120.0)
    parser.add_argument("--safety-s", type=int, default=60)
    parser.add_argument("--rush-rate", type=float, default=120.0)
    parser.add_argument("--rush-s", type=float, default=45.0)
    parser.add_argument("--tail-rate", type=float, default=20.0)
    parser.add_argument("--tail-s", type=float, default=40.0)
    parser.add_argument("--timeout-s", type=float, default=180.0)
    parser.add_argument("--out", type=Path, default=Path("loadtest/results/b9"))
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out.with_suffix(".png"))
    summary = {k: v for k, v in result.items() if k != "series"}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

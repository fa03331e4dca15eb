"""B4, the drain ceiling: orders/s one consumer process delivers to a backend with no limit.

Orders are produced straight into Kafka first (the gateway is not measured
here), then one consumer drains them with a ceiling far above what it can do.
The backend must not be the limit, so by default it is a minimal HTTP/1.1
server (`--backend null`, an asyncio protocol on uvloop that counts orders by
Idempotency-Key and answers 201 or a duplicate 200); `--backend reference`
uses the reference backend without limits instead. Each process's CPU over the
drain is reported, so it shows which one was the limit.

    .venv/bin/python -m loadtest.b4_drain_ceiling --orders 50000
    .venv/bin/python -m loadtest.b4_drain_ceiling --orders 50000 --side-by-side   # TLS's cost

Prints one JSON summary; bounded by --timeout-s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from flashgate.ids import new_order_id
from flashgate.kafka.config import producer_config
from flashgate.order import OrderRecord, encode_record
from flashgate.settings import load_settings
from flashgate.stack.ports import free_port
from flashgate.stack.process import ManagedProcess
from loadtest.harness import Stack, command_line, cpu_seconds

DRAIN_CEILING_PER_S = 1_000_000.0


# -- the null backend ----------------------------------------------------------------------


@dataclass
class _Counts:
    seen: set[bytes] = field(default_factory=set)
    duplicates: int = 0
    per_second: dict[int, int] = field(default_factory=dict)
    first_at: float = 0.0
    last_at: float = 0.0

    def stats(self) -> dict[str, Any]:
        return {
            "orders": len(self.seen),
            "duplicates": self.duplicates,
            "per_second": {str(k): v for k, v in sorted(self.per_second.items())},
            "first_at": self.first_at,
            "last_at": self.last_at,
        }


class _NullBackend(asyncio.Protocol):
    """Just enough HTTP/1.1 (keep-alive, Content-Length bodies) to take orders fast."""

    def __init__(self, counts: _Counts) -> None:
        self._counts = counts
        self._buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self._buffer[:end]).split(b"\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get(b"content-length", b"0"))
            if len(self._buffer) < end + 4 + length:
                return
            del self._buffer[: end + 4 + length]
            method, path = lines[0].split(b" ")[:2]
            if method == b"POST":
                self._order(headers.get(b"idempotency-key", b""))
            elif path == b"/stats":
                self._answer(200, self._counts.stats())
            else:
                self._answer(404, {"error": "not found"})

    def _order(self, key: bytes) -> None:
        counts = self._counts
        if key in counts.seen:
            counts.duplicates += 1
            self._answer(200, {"duplicate": True})
            return
        now = time.time()
        counts.seen.add(key)
        second = int(now)
        counts.per_second[second] = counts.per_second.get(second, 0) + 1
        counts.first_at = counts.first_at or now
        counts.last_at = now
        self._answer(201, {"stored": True})

    def _answer(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        reason = {200: b"OK", 201: b"Created", 404: b"Not Found"}[status]
        self._transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (status, reason, len(body), body)
        )


def serve_null(port: int) -> None:
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        counts = _Counts()
        server = await loop.create_server(
            lambda: _NullBackend(counts), "127.0.0.1", port, backlog=1024
        )
        async with server:
            await server.serve_forever()

    uvloop.run(main())


# -- the benchmark --------------------------------------------------------------------------


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def preload(variables: dict[str, str], orders: int) -> None:
    settings = load_settings(environ=variables)
    producer = Producer(producer_config(settings.kafka, "b4-preload"))
    now = time.time()
    for i in range(orders):
        order_id = new_order_id()
        record = OrderRecord(order_id=order_id, accepted_at=now, sale_id="b4",
                             sku=f"SKU-{i % 4}", quantity=1, user_id=f"user-{i}")  # fmt: skip
        while True:
            try:
                producer.produce(settings.kafka.orders_topic, encode_record(record),
                                 key=order_id.encode())  # fmt: skip
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(60):
        raise RuntimeError("preload not acknowledged by Kafka")


def infra_pids(stack: Stack) -> dict[str, int | None]:
    """Kafka's and Redis's pids (their wrappers keep the process private)."""
    return {
        "kafka": getattr(getattr(stack.broker, "_process", None), "pid", None),
        "redis": getattr(getattr(stack.redis, "_process", None), "pid", None),
    }


def _drain(
    stack: Stack, args: argparse.Namespace, *, group: str, listener: str = ""
) -> dict[str, Any]:
    """One consumer (group `group`) drains the preloaded topic into a fresh backend; its
    figures. `listener="plaintext"`: over the PLAINTEXT listener of a secured broker."""
    port = free_port()
    if args.backend == "null":
        argv = [sys.executable, "-m", "loadtest.b4_drain_ceiling", "--serve-null", str(port)]
    else:
        argv = [
            sys.executable, "-m", "reference_backend", "--port", str(port),
            "--db", str(stack.root / f"backend-{group}.sqlite3"), "--rate", "0",
            "--concurrency", "0", "--commit-interval-ms", "50",
        ]  # fmt: skip
    backend = stack.start("backend", argv, port)
    backend_url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHGATE_")}
    env.update(stack.variables(listener=listener, **_drain_variables(args, backend_url, group)))
    consumer = ManagedProcess(
        "consumer", [sys.executable, "-m", "order_consumer.main"],
        log_path=stack.root / f"consumer-{group}.log", env=env, cwd=Path.cwd(),
    )  # fmt: skip
    consumer.start()
    stack.processes.append(consumer)
    pids = {"consumer": consumer.pid, "backend": backend.pid, **infra_pids(stack)}
    # The consumer's start (imports, joining the group) is not drain time: the clock
    # and the CPU counters start at its first delivery.
    deadline = time.monotonic() + args.timeout_s
    stats = _get(f"{backend_url}/stats")
    while stats["orders"] == 0 and time.monotonic() < deadline:
        if not consumer.running():
            raise RuntimeError(f"consumer exited:\n{consumer.log_tail(30)}")
        time.sleep(0.02)
        stats = _get(f"{backend_url}/stats")
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items() if pid}
    wall_before = time.monotonic()
    while stats["orders"] < args.orders and time.monotonic() < deadline:
        if not consumer.running():
            raise RuntimeError(f"consumer exited:\n{consumer.log_tail(30)}")
        time.sleep(0.1)
        stats = _get(f"{backend_url}/stats")
    wall = time.monotonic() - wall_before
    cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items() if pid}
    stack.stop(consumer)
    stack.stop(backend)
    per_second = {int(k): v for k, v in stats["per_second"].items()}
    seconds = sorted(per_second)
    inner = [per_second[s] for s in seconds[1:-1]]  # whole seconds only
    if args.backend == "null" and stats.get("last_at"):
        span = stats["last_at"] - stats["first_at"]
    else:
        span = max(1e-9, len(seconds) - 1)
    return {
        "delivered": stats["orders"],
        "duplicates": stats["duplicates"],
        "orders_per_s": round(stats["orders"] / span, 1) if span > 0 else None,
        "orders_per_s_median_second": sorted(inner)[len(inner) // 2] if inner else None,
        "orders_per_s_best_second": max(inner) if inner else None,
        "drain_s": round(span, 2),
        "cpu_share_of_one_core": {
            name: round(seconds_used / wall, 2) for name, seconds_used in cpu.items()
        },
        "consumer_cpu_us_per_order": round(cpu["consumer"] / max(1, stats["orders"]) * 1e6, 1),
        "timed_out": stats["orders"] < args.orders,
    }


def _drain_variables(args: argparse.Namespace, backend_url: str, group: str) -> dict[str, str]:
    return {
        "FLASHGATE_DRAIN_BACKEND_URL": backend_url,
        "FLASHGATE_DRAIN_GROUP_ID": group,
        "FLASHGATE_DRAIN_RATE_PER_S": str(DRAIN_CEILING_PER_S),
        "FLASHGATE_DRAIN_BURST": "10000",
        "FLASHGATE_DRAIN_CONCURRENCY": str(args.concurrency),
        "FLASHGATE_DRAIN_MAX_IN_FLIGHT": str(args.max_in_flight),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    side_by_side = args.side_by_side
    security = "sasl_ssl" if side_by_side else args.kafka_security
    with Stack(
        partitions=args.partitions,
        keep=args.keep,
        kafka_security=security,
        plaintext_beside=side_by_side,
    ) as stack:
        started = time.monotonic()
        preload(stack.variables(**_drain_variables(args, "http://127.0.0.1:1", "b4")), args.orders)
        preload_s = time.monotonic() - started
        summary: dict[str, Any] = {
            "benchmark": "B4 drain ceiling",
            "command": command_line("loadtest.b4_drain_ceiling"),
            "orders": args.orders,
            "backend": args.backend,
            "concurrency": args.concurrency,
            "max_in_flight": args.max_in_flight,
            "partitions": args.partitions,
            "goal_orders_per_s": 3000,
            "preload_s": round(preload_s, 2),
            "cpus": os.cpu_count(),
        }
        if not side_by_side:
            summary.update(_drain(stack, args, group=f"b4-{os.getpid()}"))
        else:
            # Every group reads the same preloaded records; the listeners alternate.
            drains: dict[str, list[dict[str, Any]]] = {"plaintext": [], "sasl_ssl": []}
            for round_ in range(args.runs):
                for name, listener in (("plaintext", "plaintext"), ("sasl_ssl", "")):
                    group = f"b4-{os.getpid()}-{name}-{round_}"
                    drains[name].append(_drain(stack, args, group=group, listener=listener))
            keys = ("orders_per_s", "orders_per_s_median_second", "consumer_cpu_us_per_order")
            medians = {
                name: {k: statistics.median(d[k] or 0 for d in runs) for k in keys}
                for name, runs in drains.items()
            }
            plain, secured = medians["plaintext"], medians["sasl_ssl"]
            summary.update(
                {
                    "kafka": "one broker: its PLAINTEXT and SASL_SSL (SCRAM-SHA-512) listeners",
                    "runs": args.runs,
                    "medians": medians,
                    "sasl_ssl_orders_per_s_ratio": round(
                        secured["orders_per_s"] / plain["orders_per_s"], 3
                    )
                    if plain["orders_per_s"]
                    else None,
                    "sasl_ssl_consumer_cpu_us_per_order_added": round(
                        secured["consumer_cpu_us_per_order"] - plain["consumer_cpu_us_per_order"],
                        1,
                    ),
                    "drains": drains,
                    "timed_out": any(d["timed_out"] for r in drains.values() for d in r),
                }
            )
        if args.keep:
            summary["dir"] = str(stack.root)
        return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=50_000)
    parser.add_argument("--backend", choices=["null", "reference"], default="null")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-in-flight", type=int, default=2000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--timeout-s", type=float, default=120.0)
    parser.add_argument("--keep", action="store_true", help="keep logs and data")
    parser.add_argument(
        "--kafka-security", choices=["plaintext", "sasl_ssl", "mtls"], default="plaintext",
        help="the broker's listener (sasl_ssl: SCRAM-SHA-512 over TLS)",
    )  # fmt: skip
    parser.add_argument(
        "--side-by-side", action="store_true",
        help="drain the same orders over the PLAINTEXT and the SASL_SSL listener of one broker, "
             "alternately, --runs times each (a fresh consumer group and backend per drain)",
    )  # fmt: skip
    parser.add_argument("--runs", type=int, default=2, help="drains per listener (--side-by-side)")
    parser.add_argument("--out", help="also write the JSON summary here")
    parser.add_argument("--serve-null", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_null:
        serve_null(args.serve_null)
        return
    summary = run(args)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()

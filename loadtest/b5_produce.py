"""B5, write-path ceiling: a bare confluent-kafka produce loop on the same broker, against
the asyncio producers the gateway could use and against B1's full path.

Self-contained: starts a Kafka broker (and, for the `gateway` row, Redis and a
gateway) on free loopback ports, runs the rows interleaved, prints one JSON
summary with medians and ratios, and stops everything.

    .venv/bin/python loadtest/b5_produce.py --quick     # ~1 min
    .venv/bin/python loadtest/b5_produce.py             # 10 s runs x 3, medians

Rows (same producer settings as the gateway: idempotent, acks=all, lz4, linger 2 ms):
  bare-loop          Producer.produce() + poll(0) in a tight loop, flush at the end:
                     the broker's and librdkafka's ceiling for 300-byte records
  order-producer     flashgate's producer, as the gateway and the drain use it (poll thread,
                     one loop wake-up per poll batch),
                     64 concurrent awaiting senders, with headers
  aio-producer       confluent_kafka.aio.AIOProducer (its batching; headers refused)
  gateway            B1's full HTTP path (wrk, 64 connections) for the B1/B5 ratio
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import uvloop
from confluent_kafka import Producer
from harness import Stack, command_line

from flashgate.kafka.config import producer_config
from flashgate.kafka.producer import KafkaProducer
from flashgate.settings import load_settings

VALUE = b"x" * 300
HEADERS: list[tuple[str, str | bytes | None]] = [("content-type", b"application/json")]
CONCURRENCY = 64


def _config(stack: Stack) -> dict[str, Any]:
    return producer_config(load_settings(environ=stack.variables()).kafka, "b5")


def bare_loop(stack: Stack, seconds: float) -> dict[str, Any]:
    producer = Producer(_config(stack))
    sent = 0
    cpu = time.process_time()
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        for _ in range(100):
            try:
                producer.produce(stack.topic, VALUE, key=str(sent).encode(), headers=HEADERS)
                sent += 1
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    remaining = producer.flush(30)
    elapsed = time.monotonic() - start
    return {"msgs_per_s": round((sent - remaining) / elapsed, 1), "undelivered": remaining,
            "cpu_share": round((time.process_time() - cpu) / elapsed, 3)}  # fmt: skip


async def _closed_loop(send: Callable[[int], Awaitable[object]], seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    counter = 0
    stop = time.monotonic() + seconds

    async def sender() -> None:
        nonlocal counter
        while time.monotonic() < stop:
            counter += 1
            started = time.perf_counter()
            await send(counter)
            latencies.append(time.perf_counter() - started)

    cpu = time.process_time()
    start = time.monotonic()
    await asyncio.gather(*(sender() for _ in range(CONCURRENCY)))
    elapsed = time.monotonic() - start
    latencies.sort()
    return {
        "msgs_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
        "cpu_share": round((time.process_time() - cpu) / elapsed, 3),
    }


def order_producer(stack: Stack, seconds: float) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        producer = KafkaProducer(_config(stack), ack_timeout_s=6.0)
        producer.start(asyncio.get_running_loop())
        try:
            return await _closed_loop(
                lambda i: producer.send(stack.topic, VALUE, str(i).encode(), HEADERS), seconds
            )
        finally:
            await asyncio.to_thread(producer.close, 10)

    return uvloop.run(run())


def aio_producer(stack: Stack, seconds: float) -> dict[str, Any]:
    from confluent_kafka.aio import AIOProducer

    async def run() -> dict[str, Any]:
        # buffer_timeout bounds how long its local batch waits; 1 s by default.
        producer = AIOProducer(_config(stack), buffer_timeout=0.005, batch_size=CONCURRENCY)
        headers_supported = True
        try:
            await producer.produce(stack.topic, VALUE, key=b"k", headers=HEADERS)
        except NotImplementedError:
            headers_supported = False

        async def send(i: int) -> object:
            delivered = await producer.produce(stack.topic, VALUE, key=str(i).encode())
            return await delivered

        try:
            result = await _closed_loop(send, seconds)
        finally:
            await producer.close()
        return {**result, "headers_supported": headers_supported}

    return uvloop.run(run())


def gateway_row(stack: Stack, seconds: float, state: dict[str, Any]) -> dict[str, Any]:
    import b1_admission as b1

    if "row" not in state:
        assert stack.redis is not None
        asyncio.run(b1.load_bench_sales(stack.redis.url))
        state["row"] = b1._rows(stack, ["gateway"])["gateway"]
        b1._measure(state["row"], 1.0, CONCURRENCY)
    result = b1._measure(state["row"], seconds, CONCURRENCY)
    return {"msgs_per_s": result["good_per_s"], "p50_ms": result["p50_ms"],
            "p99_ms": result["p99_ms"], "cpu_share": result["server_cpu_share"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s runs, 1 round")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rows", help="comma-separated subset of rows")
    args = parser.parse_args()
    seconds, runs = (3.0, 1) if args.quick else (args.seconds, args.runs)
    names = ["bare-loop", "order-producer", "aio-producer", "gateway"]
    if args.rows:
        names = [n for n in args.rows.split(",") if n]
    gateway_state: dict[str, Any] = {}
    rows: dict[str, Callable[[Stack, float], dict[str, Any]]] = {
        "bare-loop": bare_loop,
        "order-producer": order_producer,
        "aio-producer": aio_producer,
        "gateway": lambda stack, s: gateway_row(stack, s, gateway_state),
    }
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    with Stack() as stack:
        for name in names:  # warm up: connections, metadata, the broker's JIT
            rows[name](stack, 1.0)
        for _ in range(runs):
            for name in names:
                results[name].append(rows[name](stack, seconds))

    medians = {
        name: {
            key: round(statistics.median(r[key] for r in runs_), 3)
            for key in runs_[0]
            if isinstance(runs_[0][key], (int, float)) and not isinstance(runs_[0][key], bool)
        }
        for name, runs_ in results.items()
    }
    base = medians.get("bare-loop", {}).get("msgs_per_s")

    def ratio(name: str) -> float | None:
        if base and name in medians:
            return round(medians[name]["msgs_per_s"] / base, 3)
        return None

    summary = {
        "benchmark": "B5 write-path ceiling",
        "command": command_line("loadtest.b5_produce"),
        "seconds_per_run": seconds,
        "runs": runs,
        "concurrency": CONCURRENCY,
        "machine": {"cpus": os.cpu_count()},
        "medians": medians,
        "ratios_to_bare_loop": {name: ratio(name) for name in names if name != "bare-loop"},
        "aio_headers_supported": results.get("aio-producer", [{}])[0].get("headers_supported"),
        "all_runs": results,
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

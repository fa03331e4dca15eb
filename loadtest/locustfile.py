"""Locust scenario of a flash sale: idle shoppers, a spike of buyers, then a tail.

Each simulated shopper POSTs one order with an `Idempotency-Key` (so a retry can
never buy twice), retries on 429/503 after the `Retry-After` the gateway sent,
polls the order's status until it is delivered, and gives up on `sold_out`.

A `503 outcome_unknown` (Kafka's answer for the order was lost; the gateway
keeps its units until it knows) is not retried: the shopper polls the order's
`status_url`, waiting the `Retry-After` between reads (capped, bounded in
number), until it reads accepted/delivered (the order is placed: followed as a
202 is) or failed (it is not). These show in the summary as their own rows,
type ORDER: `outcome_unknown`, then `outcome_unknown -> accepted`, `-> failed`
or `-> unsettled` (the polls ran out).

Web UI:   .venv/bin/locust -f loadtest/locustfile.py --host http://127.0.0.1:8080
Headless: .venv/bin/locust -f loadtest/locustfile.py --host http://127.0.0.1:8080 \
              --headless --csv .flashgate/locust/sale --sale-id sale-1 --skus SKU-1,SKU-2 \
              --spike-users 500 --spike-seconds 30
Many cores: add `--processes N` (or -1 for one per core): Locust forks N workers
              and a master; one Locust process tops out near one core.

Shoppers are `FastHttpUser`s (geventhttpclient: several times the requests per
core of `HttpUser`'s requests). A generator that ran out of CPU queues its own
requests, and that queueing lands in the response times. Each Locust process
watches itself every 0.25 s (its CPU share, and how late its own timer fires);
when a window was at 90 % of a core or 100 ms late, a row
`WARNING  generator CPU saturated` is in the summary and its CSV, and the run
ends with a line saying the latencies are not the server's. Every run ends with
a `generator:` verdict line.

Options (also settable in the web UI): --sale-id, --skus, --spike-users,
--idle-users, --idle-seconds, --spike-seconds, --tail-seconds, --sale-spawn-rate,
--storefront-token, --poll-status. The shape ends the run by itself.
"""

from __future__ import annotations

import json
import random
import time
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import gevent
from locust import FastHttpUser, LoadTestShape, between, events, task
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner

MAX_ATTEMPTS = 8
# A shopper who came before the opening waits for it at most this many times.
NOT_OPEN_WAITS = 60
MAX_RETRY_AFTER_S = 10.0
STATUS_POLLS = 10
OUTCOME_UNKNOWN = "outcome_unknown"
# Status reads while an unknown outcome settles (the reaper needs about the
# reservation TTL plus one round: 35 s by default, the Retry-After it sends).
UNKNOWN_POLLS = 12


@events.init_command_line_parser.add_listener
def _options(parser: LocustArgumentParser) -> None:
    group = parser.add_argument_group("flash sale")
    group.add_argument("--sale-id", default="sale-1", help="sale to buy from")
    group.add_argument("--skus", default="SKU-1", help="comma-separated SKUs on sale")
    group.add_argument("--idle-users", type=int, default=10, help="shoppers before the sale")
    group.add_argument("--idle-seconds", type=int, default=10, help="quiet phase length")
    group.add_argument("--spike-users", type=int, default=300, help="shoppers in the burst")
    group.add_argument("--spike-seconds", type=int, default=30, help="burst length (10-60)")
    group.add_argument("--tail-users", type=int, default=30, help="shoppers after the burst")
    group.add_argument("--tail-seconds", type=int, default=20, help="tail length")
    group.add_argument("--sale-spawn-rate", type=float, default=200.0, help="users started per s")
    group.add_argument("--storefront-token", default="", help="bearer token, if configured")
    group.add_argument(
        "--poll-status", default="true", choices=["true", "false"], help="poll order status"
    )
    group.add_argument(
        "--open-at-spike", default="false", choices=["true", "false"],
        help="schedule the (loaded) sale to open when the spike starts: the idle shoppers "
        "meet 409 sale_not_open and wait for it (needs --admin-url and --admin-token)",
    )  # fmt: skip
    group.add_argument("--admin-url", default="http://127.0.0.1:8081", help="gateway admin API")
    group.add_argument("--admin-token", default="", help="the admin API's bearer token")


class SaleShape(LoadTestShape):
    """Idle, spike, tail, stop: the traffic of a sale that opens at a set time."""

    def tick(self) -> tuple[int, float] | None:
        options = self.runner.environment.parsed_options if self.runner else None
        if options is None:
            return None
        elapsed = self.get_run_time()
        phases = [
            (options.idle_seconds, options.idle_users),
            (options.spike_seconds, options.spike_users),
            (options.tail_seconds, options.tail_users),
        ]
        for length, users in phases:
            if elapsed < length:
                return users, options.sale_spawn_rate
            elapsed -= length
        return None


# The generator watches itself every WATCH_S: its CPU share over the window, and how
# late its own timer fired (lag: the wait every request's callback had too, counted in
# the response times Locust reports). Locust's own monitor samples every 5 s, which
# misses a spike that is over within a second or two.
WATCH_S = 0.25
SATURATED_CPU_SHARE = 0.9
SATURATED_LAG_S = 0.1
WARNING_ROW = ("WARNING", "generator CPU saturated")


@dataclass
class GeneratorCpu:
    """Whether this generator ran out of CPU: a saturated one queues its own requests,
    and that wait is counted in every response time it reports."""

    peak_share: float = 0.0
    max_lag_s: float = 0.0
    saturated_windows: int = 0

    def observe(self, cpu_share: float, lag_s: float) -> bool:
        """One window; True for the first saturated one."""
        self.peak_share = max(self.peak_share, cpu_share)
        self.max_lag_s = max(self.max_lag_s, lag_s)
        if cpu_share < SATURATED_CPU_SHARE and lag_s < SATURATED_LAG_S:
            return False
        self.saturated_windows += 1
        return self.saturated_windows == 1

    def verdict(self, *, saturated: bool, watched_here: bool = True) -> str:
        """`watched_here` False: a master, whose worker processes did the watching."""
        lag_ms = self.max_lag_s * 1000
        seen = (
            f"peak {self.peak_share:.0%} of a core, timer late by up to {lag_ms:.0f} ms"
            if watched_here
            else "as the worker processes saw it"
        )
        if saturated or self.saturated_windows:
            return (
                f"generator: SATURATED ({seen}): response times include Locust's own "
                "queueing and are not the server's; rerun with --processes N (or fewer "
                "users, a lower --sale-spawn-rate)"
            )
        return f"generator: not saturated ({seen}); response times are the server's"


CPU = GeneratorCpu()


def _watch(environment: Environment) -> None:
    wall, cpu = time.monotonic(), time.process_time()
    while True:
        gevent.sleep(WATCH_S)
        now, used = time.monotonic(), time.process_time()
        if CPU.observe((used - cpu) / (now - wall), now - wall - WATCH_S):
            # A row of its own, so the summary and the CSV carry it next to the latencies
            # (from a worker process too: its rows reach the master's summary).
            environment.events.request.fire(
                request_type=WARNING_ROW[0], name=WARNING_ROW[1], response_time=0,
                response_length=0, exception=None, context={},
            )  # fmt: skip
        wall, cpu = now, used


@events.test_start.add_listener
def _start_watch(environment: Environment, **kwargs: Any) -> None:
    if not isinstance(environment.runner, MasterRunner):
        gevent.spawn(_watch, environment)


@events.test_start.add_listener
def _schedule_opening(environment: Environment, **kwargs: Any) -> None:
    """With --open-at-spike: reload the sale as it is, opening when the spike starts."""
    options = environment.parsed_options
    if options is None or options.open_at_spike != "true":
        return
    if isinstance(environment.runner, WorkerRunner):
        return  # the master (or the only process) schedules it, once
    opens = datetime.now(UTC) + timedelta(seconds=options.idle_seconds)
    sale = _admin(options, "GET", f"/admin/v1/sales/{options.sale_id}")
    definition = {
        "stock": {sku: counts["loaded"] for sku, counts in sale["skus"].items()},
        "per_order_max": sale["per_order_max"],
        "per_user_max": sale["per_user_max"],
        "rates": sale["rates"],
        "opens_at": opens.isoformat(timespec="milliseconds"),
    }
    _admin(options, "PUT", f"/admin/v1/sales/{options.sale_id}", definition)
    print(f"sale {options.sale_id} opens at {definition['opens_at']}", flush=True)


def _admin(options: Any, method: str, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        options.admin_url.rstrip("/") + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {options.admin_token}",
                 "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@events.quitting.add_listener
def _verdict(environment: Environment, **kwargs: Any) -> None:
    runner = environment.runner
    if runner is None or isinstance(runner, WorkerRunner):
        return
    seen_by_a_worker = (WARNING_ROW[1], WARNING_ROW[0]) in runner.stats.entries
    locust_saw = runner.cpu_warning_emitted or bool(
        getattr(runner, "worker_cpu_warning_emitted", False)
    )
    saturated = seen_by_a_worker or locust_saw
    watched_here = not isinstance(runner, MasterRunner)
    print(CPU.verdict(saturated=saturated, watched_here=watched_here), flush=True)


class Shopper(FastHttpUser):
    """One buyer: order once (retrying safely), follow the order, leave."""

    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.sale_id: str = options.sale_id
        self.skus: list[str] = [s for s in options.skus.split(",") if s]
        self.poll_status: bool = options.poll_status == "true"
        self.headers: dict[str, str] = {"Content-Type": "application/json"}
        if options.storefront_token:
            self.headers["Authorization"] = f"Bearer {options.storefront_token}"

    @task
    def buy(self) -> None:
        order = {
            "sale_id": self.sale_id,
            "sku": random.choice(self.skus),
            "quantity": 1,
            "user_id": f"user-{uuid.uuid4().hex[:12]}",
            "attributes": {"channel": "locust"},
        }
        # One key for every attempt: a retry after a lost answer never buys twice.
        headers = {**self.headers, "Idempotency-Key": uuid.uuid4().hex}
        attempts = 0
        for _ in range(MAX_ATTEMPTS + NOT_OPEN_WAITS):
            with self.client.post(
                "/v1/orders", json=order, headers=headers, name="POST /v1/orders",
                catch_response=True,
            ) as response:  # fmt: skip
                status = response.status_code
                if status in (202, 409, 410, 429, 503):
                    # 429/503 (shaped out, shed) and 409 (sold out) are what a sale looks
                    # like, not failures of the gateway.
                    response.success()
                else:
                    response.failure(f"unexpected {status}: {response.text[:200]}")
            if status == 202:
                self._follow(response.json()["order_id"])
                break
            error = _error(response.text)
            if status == 409 and error == "sale_not_open":
                # Here before the opening: wait as told (capped) and ask again; waiting
                # for the sale is not an attempt that failed.
                self._count("sale_not_open")
                time.sleep(_retry_after(response.headers.get("Retry-After")))
                continue
            if status == 410:
                self._count("sale_closed")
                break
            if status == 503 and error == OUTCOME_UNKNOWN:
                self._settle_unknown(response.json(), response.headers.get("Retry-After"))
                break
            if status not in (429, 503):
                break  # sold out, over the limit, or an error: the shopper leaves
            attempts += 1
            if attempts >= MAX_ATTEMPTS:
                break
            time.sleep(_retry_after(response.headers.get("Retry-After")))
        raise StopUser()

    def _settle_unknown(self, answer: dict[str, Any], retry_after: str | None) -> None:
        """Poll an outcome_unknown order's status until it settles, as a storefront
        would; a retry with the same key would only get the same 503 meanwhile."""
        self._count("outcome_unknown")
        for _ in range(UNKNOWN_POLLS):
            time.sleep(_retry_after(retry_after))
            response = self.client.get(answer["status_url"], name="GET /v1/orders/{id}")
            body: dict[str, Any] = response.json() if response.status_code == 200 else {}
            if body.get("status") in ("accepted", "delivered"):
                self._count("outcome_unknown -> accepted")
                self._follow(answer["order_id"])
                return
            if body.get("status") == "failed":
                self._count("outcome_unknown -> failed")
                return
        self._count("outcome_unknown -> unsettled")

    def _count(self, name: str) -> None:
        """One row of the summary (type ORDER) that counts events, not requests."""
        self.environment.events.request.fire(
            request_type="ORDER", name=name, response_time=0, response_length=0,
            exception=None, context={},
        )  # fmt: skip

    def _follow(self, order_id: str) -> None:
        if not self.poll_status:
            return
        for _ in range(STATUS_POLLS):
            response = self.client.get(f"/v1/orders/{order_id}", name="GET /v1/orders/{id}")
            body: dict[str, Any] = response.json() if response.status_code == 200 else {}
            if body.get("status") in ("delivered", "failed"):
                return
            time.sleep(min(5.0, max(0.5, float(body.get("eta_seconds") or 1.0))))


def _error(text: str) -> str | None:
    try:
        answer = json.loads(text)
    except ValueError:
        return None
    error = answer.get("error") if isinstance(answer, dict) else None
    return error if isinstance(error, str) else None


def _retry_after(value: str | None) -> float:
    try:
        seconds = float(value) if value is not None else 1.0
    except ValueError:
        seconds = 1.0
    return min(MAX_RETRY_AFTER_S, max(0.1, seconds)) * random.uniform(1.0, 1.5)

"""Sub-commands of `flashgate` for sale day: status, drain, sale, plan.

Each `cmd_*` takes the parsed arguments and the settings and returns an exit code.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.live import Live
from rich.table import Table

from flashgate.drain.schedule import Schedule
from flashgate.errors import FlashgateError
from flashgate.ops.admin_client import AdminClient, read_sale_file
from flashgate.ops.plan import human_bytes, human_duration, make_plan
from flashgate.ops.status_view import StatusTracker, render
from flashgate.settings import Settings
from flashgate.supervisor import RECORDS, read_records

WATCH_INTERVAL_S = 1.0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    client = AdminClient.from_settings(settings)
    console = Console()
    tracker = StatusTracker()
    tracker.update(client.drain())
    run = settings.state_dir / "run"
    records = [run / name for name in RECORDS]
    if not args.watch:
        console.print(render(client.drain(), tracker, read_records(records)))
        return 0
    deadline = time.monotonic() + args.seconds if args.seconds else None
    first = render(client.drain(), tracker, read_records(records))
    with Live(first, console=console, refresh_per_second=4) as live:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(WATCH_INTERVAL_S)
            drain = client.drain()
            tracker.update(drain)
            live.update(render(drain, tracker, read_records(records)))
    return 0


def cmd_drain(args: argparse.Namespace, settings: Settings) -> int:
    client = AdminClient.from_settings(settings)
    if args.rate is not None:
        if args.rate < 0:
            raise FlashgateError("--rate must be >= 0")
        change: dict[str, object] = {"rate": args.rate}
    elif args.pause:
        change = {"paused": True}
    elif args.resume:
        change = {"paused": False}
    elif args.reset:
        change = {"rate": None, "paused": False}
    else:
        change = {}
    drain = client.set_drain(change) if change else client.drain()
    tracker = StatusTracker()
    tracker.update(drain)
    Console().print(render(drain, tracker))
    return 0


def cmd_sale(args: argparse.Namespace, settings: Settings) -> int:
    client = AdminClient.from_settings(settings)
    console = Console()
    if args.sale_command == "load":
        file_id, sale = read_sale_file(Path(args.file))
        sale_id = args.sale_id or file_id
        if not sale_id:
            raise FlashgateError("name the sale: `sale_id = ...` in the file or --sale-id")
        result = client.load_sale(sale_id, sale)
        console.print(f"loaded sale [bold]{sale_id}[/bold]")
        console.print_json(data=result)
        return 0
    result = client.sale(args.sale_id)
    console.print(f"sale {args.sale_id}: {sale_state(result)}", soft_wrap=True)
    table = Table(title=f"sale {args.sale_id}")
    table.add_column("SKU")
    for column in ("loaded", "remaining", "reserved", "accepted"):
        table.add_column(column, justify="right")
    for sku, counts in sorted((result.get("skus") or {}).items()):
        table.add_row(
            sku, *(f"{counts.get(c, 0):,}" for c in ("loaded", "remaining", "reserved", "accepted"))
        )
    console.print(table)
    others = {k: v for k, v in result.items() if k != "skus"}
    if others:
        console.print_json(data=others)
    return 0


def sale_state(report: dict[str, Any]) -> str:
    """ "scheduled, opens at ... (in 2h 5m)", "open", "closed at ...", "sold out"."""
    state = str(report.get("state", "open"))
    if state == "scheduled":
        return f"scheduled, opens at {report['opens_at']} (in {_span(report['seconds_to_open'])})"
    if state == "closed":
        return f"closed at {report['closes_at']}"
    if state == "open" and report.get("seconds_to_close") is not None:
        return f"open, closes at {report['closes_at']} (in {_span(report['seconds_to_close'])})"
    return state.replace("_", " ")


def _span(seconds: float) -> str:
    whole = max(0, round(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = (
        [f"{days}d"] * bool(days) + [f"{hours}h"] * bool(hours) + [f"{minutes}m"] * bool(minutes)
    )
    return " ".join([*parts, f"{secs}s"])


def cmd_plan(args: argparse.Namespace, settings: Settings) -> int:
    drain = settings.drain
    plan = make_plan(
        burst=args.burst,
        rate_per_s=args.rate,
        order_bytes=args.order_bytes,
        replication=args.replication or settings.kafka.replication_factor,
        retention_s=settings.kafka.retention_ms // 1000,
        # Without --rate: the settings' schedule, from now on.
        schedule=Schedule.parse(drain.schedule, drain.timezone, drain.rate_per_s),
        start=time.time(),
    )
    if args.json:
        print(msgspec.json.encode(plan).decode())
        return 0
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("orders", f"{plan.burst:,} of ~{plan.order_bytes} B")
    source = "" if args.rate is not None else " (the settings' schedule from now, on average)"
    table.add_row("drain rate", f"{plan.rate_per_s:,.6g}/s{source}")
    table.add_row("drain time", human_duration(plan.drain_seconds))
    table.add_row(
        "Kafka disk",
        f"{human_bytes(plan.kafka_bytes)} ({human_bytes(plan.kafka_bytes_per_replica)} "
        f"x {plan.replication} replicas)",
    )
    holds = "yes" if plan.buffer_holds else "NO: orders would expire before they drain"
    table.add_row("retention holds it", f"{holds} (retention {human_duration(plan.retention_s)})")
    Console().print(table)
    return 0 if plan.buffer_holds else 2


def add_ops_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = commands.add_parser("status", help="backlog, rates and ETA of the drain")
    status.add_argument("--watch", action="store_true", help="refresh every second")
    status.add_argument("--seconds", type=float, default=0, help="stop watching after this")
    status.set_defaults(run=cmd_status)

    drain = commands.add_parser("drain", help="show or change the drain rate")
    what = drain.add_mutually_exclusive_group()
    what.add_argument("--rate", type=float, help="override the rate (orders/s) for the group")
    what.add_argument("--pause", action="store_true", help="stop delivering (rate 0)")
    what.add_argument("--resume", action="store_true", help="deliver again")
    what.add_argument("--reset", action="store_true", help="back to the config file's rate")
    drain.set_defaults(run=cmd_drain)

    sale = commands.add_parser("sale", help="load or show a sale")
    sale_commands = sale.add_subparsers(dest="sale_command", required=True)
    load = sale_commands.add_parser("load", help="load (or reload) a sale from a TOML file")
    load.add_argument("file")
    load.add_argument("--sale-id", help="overrides `sale_id` in the file")
    show = sale_commands.add_parser("show", help="remaining stock and counts of a sale")
    show.add_argument("sale_id")
    sale.set_defaults(run=cmd_sale)

    plan = commands.add_parser("plan", help="drain time and Kafka disk for a burst")
    plan.add_argument("--burst", type=int, required=True, help="orders in the burst")
    plan.add_argument(
        "--rate", type=float, help="drain rate, orders/s (default: the settings' schedule)"
    )
    plan.add_argument("--order-bytes", type=int, default=300, help="bytes per order record")
    plan.add_argument("--replication", type=int, default=0, help="default: from the settings")
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    plan.set_defaults(run=cmd_plan)

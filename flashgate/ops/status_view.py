"""`flashgate status`: the drain at a glance, rendered with rich.

Accepted orders per second are derived, not asked for: what the backlog grew by
plus what was delivered in the same interval, so the view needs nothing but the
admin API's drain report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from flashgate.ops.plan import human_duration


@dataclass
class Sample:
    at: float
    backlog: int
    delivered_per_second: float


@dataclass
class StatusTracker:
    """Remembers the first and previous report, to derive rates and the drain's progress."""

    first: Sample | None = None
    previous: Sample | None = None
    accepted_per_second: float | None = None
    peak_backlog: int = 0

    def update(self, drain: dict[str, Any], now: float | None = None) -> None:
        sample = Sample(
            at=time.monotonic() if now is None else now,
            backlog=int(drain.get("backlog") or 0),
            delivered_per_second=float(drain.get("delivered_per_second") or 0.0),
        )
        if self.previous is not None and sample.at > self.previous.at:
            grew = (sample.backlog - self.previous.backlog) / (sample.at - self.previous.at)
            self.accepted_per_second = max(0.0, grew + sample.delivered_per_second)
        self.first = self.first or sample
        self.previous = sample
        self.peak_backlog = max(self.peak_backlog, sample.backlog)


def render(
    drain: dict[str, Any],
    tracker: StatusTracker,
    processes: dict[str, dict[str, int | None]] | None = None,
) -> RenderableType:
    """`processes`: what the local supervisors run (`flashgate.supervisor.read_records`)."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    effective = drain.get("effective_rate")
    reason = drain.get("reason") or "?"
    paused = bool(drain.get("paused"))
    rate_text = "paused" if paused else f"{_num(effective)}/s"
    table.add_row("effective rate", f"{rate_text}  (set by {reason})")
    refusal = drain.get("backend_refusal")
    if refusal:
        # Status 0 is a TLS refusal, whose message already says so.
        status = f"{refusal['status']} " if refusal.get("status") else ""
        table.add_row(
            Text("BACKEND REFUSES", style="bold red"),
            Text(f"{status}{refusal.get('message', '')}: drain held, nothing dead-lettered",
                 style="red"),
        )  # fmt: skip
    table.add_row("configured rate", f"{_num(drain.get('configured_rate'))}/s")
    override = drain.get("override_rate")
    table.add_row("ops override", "none" if override is None else f"{_num(override)}/s")
    if drain.get("schedule"):
        table.add_row("schedule", str(drain["schedule"]))
    accepted = tracker.accepted_per_second
    table.add_row("accepted/s", "…" if accepted is None else f"{accepted:,.0f}")
    table.add_row("delivered/s", f"{float(drain.get('delivered_per_second') or 0):,.0f}")
    backlog = int(drain.get("backlog") or 0)
    table.add_row("backlog", f"{backlog:,} orders")
    eta = drain.get("eta_seconds")
    table.add_row(
        "empty in", "never (paused or rate 0)" if eta is None else human_duration(float(eta))
    )
    buffer = drain.get("buffer") or {}
    if buffer:
        admitted = buffer.get("admitted_delivered_in_s")
        table.add_row(
            "order now delivered in", "never" if admitted is None else human_duration(admitted)
        )
        table.add_row("oldest undelivered", human_duration(float(buffer["oldest_age_s"])))
        headroom = float(buffer["headroom_s"])
        low = headroom < float(buffer.get("safety_s") or 0)
        table.add_row(
            "retention headroom",
            Text(_signed_duration(headroom), style="bold red" if low else ""),
        )
    lost = int(drain.get("lost_orders") or 0)
    if lost:
        ranges = ", ".join(
            f"p{r['partition']} {r['first']}-{r['end'] - 1}" for r in drain.get("lost_ranges") or []
        )
        table.add_row("LOST to retention", Text(f"{lost:,} orders ({ranges})", style="bold red"))

    peak = max(tracker.peak_backlog, backlog, 1)
    done = peak - backlog
    bar = ProgressBar(total=peak, completed=done, width=40)
    caption = Text(f" drained {done:,} of {peak:,} seen since watching")
    if not processes:
        return Group(table, Text(""), Group(bar, caption))
    return Group(table, Text(""), Group(bar, caption), Text(""), _processes(processes))


def _processes(processes: dict[str, dict[str, int | None]]) -> Table:
    table = Table(box=None, pad_edge=False)
    for column in ("process", "pid", "restarts", "last exit"):
        table.add_column(column, style="bold" if column == "process" else None)
    for name, child in processes.items():
        last = child.get("last_exit")
        table.add_row(
            name, str(child.get("pid") or "—"), str(child.get("restarts") or 0),
            "—" if last is None else str(last),
        )  # fmt: skip
    return table


def _signed_duration(seconds: float) -> str:
    return ("-" if seconds < 0 else "") + human_duration(abs(seconds))


def _num(value: Any) -> str:
    if value is None:
        return "—"
    number = float(value)
    return f"{number:,.0f}" if number == int(number) else f"{number:,.1f}"

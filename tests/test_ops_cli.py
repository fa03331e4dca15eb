"""The `flashgate` command's offline parts: plan, status arithmetic, clear errors."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from flashgate.ops.plan import human_bytes, human_duration, make_plan
from flashgate.ops.status_view import StatusTracker, render
from flashgate.stack.ports import free_port


def test_plan_of_the_seed_example() -> None:
    plan = make_plan(burst=100_000_000, rate_per_s=500, order_bytes=300, replication=3)
    assert plan.drain_seconds == 200_000
    assert plan.kafka_bytes_per_replica == 100_000_000 * 370
    assert plan.kafka_bytes == 3 * plan.kafka_bytes_per_replica
    assert plan.buffer_holds  # 2.3 days < 3 days
    assert not make_plan(burst=200_000_000, rate_per_s=500).buffer_holds


def test_plan_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        make_plan(burst=10, rate_per_s=0)


def test_human_units() -> None:
    assert human_duration(100) == "1m 40s"
    assert human_duration(200_000) == "2d 7h 33m 20s"
    assert human_bytes(512) == "512 B"
    assert human_bytes(3 * 1024**3) == "3.0 GiB"


def test_accepted_rate_is_backlog_growth_plus_delivered() -> None:
    tracker = StatusTracker()
    tracker.update({"backlog": 1_000, "delivered_per_second": 100}, now=0.0)
    assert tracker.accepted_per_second is None
    tracker.update({"backlog": 1_900, "delivered_per_second": 100}, now=1.0)
    assert tracker.accepted_per_second == 1_000
    tracker.update({"backlog": 1_800, "delivered_per_second": 100}, now=2.0)
    assert tracker.accepted_per_second == 0
    assert tracker.peak_backlog == 1_900


def test_status_shows_a_backend_refusing_every_order_and_nothing_when_it_does_not() -> None:
    def text(drain: dict[str, object]) -> str:
        console = Console(width=140, record=True, file=io.StringIO())
        console.print(render(drain, StatusTracker()))
        return console.export_text()

    drain: dict[str, object] = {"effective_rate": 500, "reason": "schedule", "backlog": 9}
    assert "BACKEND REFUSES" not in text(drain)
    drain["backend_refusal"] = {"status": 401, "message": "token expired", "consumers": 2}
    shown = text(drain)
    assert "BACKEND REFUSES" in shown and "401 token expired" in shown
    drain["backend_refusal"] = {"status": 0, "message": "TLS: certificate verify failed"}
    assert "  TLS: certificate verify failed: drain held" in text(drain)


def _flashgate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flashgate", *args],
        capture_output=True, text=True, timeout=30, env=env, check=False,
    )  # fmt: skip


def test_plan_command_json() -> None:
    result = _flashgate("plan", "--burst", "50000", "--rate", "500", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["drain_seconds"] == 100


def test_commands_say_when_the_stack_is_not_running(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHGATE_")}
    env |= {
        "FLASHGATE_CONFIG": str(tmp_path / "none.toml"),
        "FLASHGATE_ADMIN_PORT": str(free_port()),
        "FLASHGATE_ADMIN_TOKEN": "t",
    }
    (tmp_path / "none.toml").write_text("")
    for args in (["status"], ["drain", "--rate", "5"], ["sale", "show", "s"]):
        result = _flashgate(*args, env=env)
        assert result.returncode == 1
        assert "the stack is not running" in result.stderr
        assert "Traceback" not in result.stderr


def test_plan_follows_the_schedule_ahead() -> None:
    from datetime import UTC, datetime

    from flashgate.drain.schedule import Schedule

    # 10/s until 13:00, 100/s after: 36,000 in the first hour, 64,000 more in 640 s.
    schedule = Schedule.parse(["12:00-13:00=10"], "UTC", 100)
    noon = datetime(2026, 12, 3, 12, tzinfo=UTC).timestamp()
    plan = make_plan(burst=100_000, rate_per_s=None, schedule=schedule, start=noon)
    assert plan.drain_seconds == pytest.approx(3600 + 640)
    assert plan.rate_per_s == pytest.approx(100_000 / 4240)
    short = make_plan(burst=100_000, rate_per_s=None, schedule=schedule, start=noon,
                      retention_s=4000)  # fmt: skip
    assert not short.buffer_holds


def test_status_shows_headroom_and_losses_in_red() -> None:
    from rich.console import Console

    from flashgate.ops.status_view import render

    drain = {
        "effective_rate": 0, "reason": "paused", "paused": True, "configured_rate": 100,
        "backlog": 500, "eta_seconds": None, "lost_orders": 24,
        "lost_ranges": [{"partition": 2, "first": 3, "end": 8}],
        "buffer": {"admitted_delivered_in_s": None, "oldest_age_s": 90000.0,
                   "headroom_s": 3600.0, "safety_s": 21600, "retention_s": 259200},
    }  # fmt: skip
    console = Console(record=True, width=120, color_system="standard", file=io.StringIO())
    console.print(render(drain, StatusTracker()))
    styled = console.export_text(styles=True, clear=False)
    text = console.export_text()
    assert "never (paused or rate 0)" in text
    assert "1h 0m 0s" in text and "1d 1h 0m 0s" in text
    assert "24 orders (p2 3-7)" in text
    red = [line for line in styled.splitlines() if "\x1b[1;31m" in line]
    assert len(red) == 2 and "headroom" in red[0] and "LOST" in red[1], red

"""loadtest/report.py: the generated part and the hand-written discussion stay apart."""

from __future__ import annotations

import json
from pathlib import Path

from loadtest.report import (
    CHAOS_HEADING,
    DISCUSSION_HEADING,
    DISCUSSION_SEPARATOR,
    replace_chaos_section,
    write_results,
)

B4 = {
    "key": "B4",
    "title": "drain ceiling of one consumer",
    "median_of": 3,
    "headline": "orders_per_s",
    "values": [4462.8, 4508.8, 4583.5],
    "result": {"orders_per_s": 4508.8, "_command": "python -m loadtest.b4_drain_ceiling"},
}
B1 = {
    "key": "B1",
    "title": "admission efficiency",
    "median_of": 1,
    "headline": "ratio",
    "values": [0.626],
    "result": {"ratio": 0.626, "runs": 3, "seconds_per_run": 10.0, "_command": "b1"},
}


def _chaos_row(scenario: str, lost: int) -> str:
    row = {"scenario": scenario, "orders": 5000, "accepted": 5000, "lost": lost, "attempts": 5000}
    return json.dumps(row)


def _write(tmp_path: Path, chaos_rows: list[str]) -> Path:
    chaos = tmp_path / "chaos.jsonl"
    chaos.write_text("\n".join(chaos_rows) + "\n")
    discussion = tmp_path / "discussion.md"
    discussion.write_text("## Notes\n\nB4 ran at 4,509/s (`make bench`, 2026-11-24).\n")
    report = tmp_path / "RESULTS.md"
    write_results(
        report, {"B4": B4, "B1": B1}, {"cpu": "test"}, tmp_path / "plot.png",
        quick=False, elapsed_s=-1.0, chaos=chaos, discussion=discussion,
    )  # fmt: skip
    return report


def test_the_discussion_follows_a_separator_that_says_it_is_hand_written(
    tmp_path: Path,
) -> None:
    lines = _write(tmp_path, [_chaos_row("broker SIGKILL", 0)]).read_text().split("\n")
    separator = lines.index(DISCUSSION_SEPARATOR)
    assert lines[separator + 2] == DISCUSSION_HEADING
    generated, written = lines[:separator], lines[separator:]
    assert "--report-only" in lines[2] and "generated" in lines[2]
    assert any("4,509" in line and "| met |" in line for line in generated)
    assert "Invoked once; inside, its rows over 3 rounds of 10 s" in "\n".join(generated)
    assert CHAOS_HEADING in generated
    assert "## Notes" in written and "## Notes" not in generated


def test_rewriting_the_chaos_table_keeps_the_discussion(tmp_path: Path) -> None:
    report = _write(tmp_path, [_chaos_row("broker SIGKILL", 0)])
    before = report.read_text()
    newer = tmp_path / "newer.jsonl"
    newer.write_text(_chaos_row("Redis restart", 0) + "\n")
    replace_chaos_section(report, newer)
    after = report.read_text()
    assert "| Redis restart |" in after and "| broker SIGKILL |" not in after
    tail = before[before.index(f"\n{DISCUSSION_SEPARATOR}\n") :]
    assert after.endswith(tail)

"""Write loadtest/RESULTS.md from the benchmark outcomes: one table per benchmark.

The generated part carries only what the scripts saved: every table names its
command and the goal from docs/ARCHITECTURE.md next to the measured figure. The
hand-written discussion in loadtest/discussion.md (if present) follows a separator
that says it is hand-written, so a re-run refreshes the numbers without losing it
and nobody takes the prose for script output.

`python -m loadtest.report` rewrites only the fault suite's table (from
loadtest/results/chaos.jsonl, which `make chaos` writes) in an existing report.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

GOALS: dict[str, list[tuple[str, str, str]]] = {
    # key: [(field, goal text, comparison "ge:x" / "le:x" / "eq:x" / "")]
    "B1": [
        ("ratio", ">= 0.85 of the bare endpoint", "ge:0.85"),
        ("p99_at_80pct_ms", "<= 50 ms at 80 % of the maximum rate", "le:50"),
    ],
    "B2": [
        ("accepted_share", "share accepted", ""),
        ("peak_ratio", "<= 1.05 (highest 1-s backend rate / set rate)", "le:1.05"),
        ("backend_refused_overloaded", "0 (the backend, 4 x faster, never said 503)", "eq:0"),
        ("drain_time_ratio", "<= 1.05 (drain time / ideal)", "le:1.05"),
        ("lost", "0", "eq:0"),
        ("duplicated", "0", "eq:0"),
    ],
    "B3": [
        ("success_share", "(compare with B2's accepted share)", ""),
        ("p99_s", "", ""),
        ("backend_errors", "", ""),
    ],
    "B1s": [
        ("ratio", "to bare: the admission path with Kafka over SASL_SSL", ""),
        ("plaintext_ratio", "the same over PLAINTEXT, same broker and run", ""),
        ("sasl_over_plaintext", "accepted orders/s, SASL_SSL / PLAINTEXT", ""),
    ],
    "B4": [("orders_per_s", ">= 3,000 orders/s", "ge:3000")],
    "B4s": [
        ("orders_per_s", "one consumer with Kafka over SASL_SSL", ""),
        ("plaintext_orders_per_s", "the same orders over PLAINTEXT, same broker and run", ""),
        ("sasl_over_plaintext", "SASL_SSL / PLAINTEXT", ""),
    ],
    "B5": [
        (
            "gateway_over_bare_loop",
            "the gateway's accepted orders/s (full HTTP path, this run) over the bare "
            "produce loop's records/s: what the HTTP path costs",
            "",
        ),
        ("ratio", "the gateway row over the bare loop (saved under its old name)", ""),
    ],
    "B6": [
        ("scaling", "accepted orders/s, 2 gateway workers / 1, same run", ""),
        ("cpu_per_order_ratio", "gateway CPU per order, 2 workers / 1", ""),
    ],
    "B7": [
        (
            "slot_orders_per_s",
            "one sale's slot, admit + confirm in batches of 64: one core-second / Redis CPU "
            "per order (docs/OPERATIONS.md, Sizing)",
            "",
        ),
        ("slot_cpu_us_per_order", "Redis CPU per accepted order on the sale's primary", ""),
        (
            "limits_on_cpu_us_per_order",
            "the same with the sale and user limiters on, as the deploys ship them",
            "",
        ),
    ],
}


def _verdict(value: Any, rule: str) -> str:
    if not rule or not isinstance(value, (int, float)):
        return ""
    op, _, raw = rule.partition(":")
    target = float(raw)
    ok = {"ge": value >= target, "le": value <= target, "eq": value == target}[op]
    return "met" if ok else "missed"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value == 0 or abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return str(value)


def _rounds_inside(result: dict[str, Any]) -> str:
    """What a summary saved before `repeats_inside` existed says it repeated inside."""
    rounds, seconds = result.get("runs"), result.get("seconds_per_run")
    if not isinstance(rounds, int) or rounds < 2:
        return ""
    each = f" of {_fmt(seconds)} s" if isinstance(seconds, (int, float)) else ""
    return f"its rows over {rounds} rounds{each}; the figures are medians"


def _section(outcome: dict[str, Any]) -> list[str]:
    key, title = outcome["key"], outcome["title"]
    lines = [f"## {key}: {title}", ""]
    if "error" in outcome:
        lines += [
            "Did not complete: " + str(outcome["error"]),
            "",
            "```",
            str(outcome.get("tail", "")),
            "```",
            "",
        ]
        return lines
    result: dict[str, Any] = outcome["result"]
    lines.append(f"Command: `{result.get('_command', '?')}`  ")
    inside = outcome.get("repeats_inside", "") or _rounds_inside(result)
    if outcome["median_of"] == 1:
        lines.append(
            f"Invoked once; inside, {inside}."
            if inside
            else "Invoked once (a single run, not a median)."
        )
    else:
        lines.append(
            f"Invoked {outcome['median_of']} times; the run shown has the median "
            f"`{outcome['headline']}` (all runs: {', '.join(_fmt(v) for v in outcome['values'])})."
            + (f" Inside each, {inside}." if inside else "")
        )
    lines += ["", "| figure | measured | goal | |", "| --- | --- | --- | --- |"]
    shown = set()
    for field, goal, rule in GOALS.get(key, []):
        if field in result:
            shown.add(field)
            value = result[field]
            lines.append(f"| {field} | {_fmt(value)} | {goal} | {_verdict(value, rule)} |")
    for field, value in result.items():
        if field in shown or field.startswith("_") or field == "series":
            continue
        if isinstance(value, (list,)) or (isinstance(value, dict) and len(value) > 12):
            continue
        lines.append(f"| {field} | {_fmt(value)} | | |")
    lines.append("")
    return lines


def write_results(
    path: Path,
    outcomes: dict[str, dict[str, Any]],
    machine: dict[str, str],
    plot: Path,
    *,
    quick: bool,
    elapsed_s: float,
    chaos: Path = HERE / "results" / "chaos.jsonl",
    discussion: Path = HERE / "discussion.md",
) -> None:
    written = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    how = (
        f"`python -m loadtest.bench{' --quick' if quick else ''}` (what `make bench` runs) "
        f"ran the benchmarks and wrote this part on {written}, in {elapsed_s / 60:.1f} minutes"
        if elapsed_s >= 0
        else "`python -m loadtest.bench --report-only` rewrote this part on "
        f"{written} from the summaries the scripts saved in `loadtest/results/`, "
        "without running anything: each table is from the last run of its benchmark"
    )
    lines = [
        "# flashgate benchmark results",
        "",
        "Down to the separator, this file is generated: the tables carry only what the "
        f"benchmark scripts saved. {how}. Definitions: docs/ARCHITECTURE.md, Benchmarks.",
        "Everything ran on one machine over loopback; load generator and servers share the cores, "
        "so ratios measured side by side in one run matter more than absolute figures.",
        "",
        "| machine | |"
        if elapsed_s >= 0
        else "| machine that rewrote this file (each run's own may differ) | |",
        "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in machine.items()],
        "",
    ]
    for key in ("B1", "B1s", "B6", "B5", "B7", "B2", "B3", "B4", "B4s"):
        if key in outcomes:
            lines += _section(outcomes[key])
    try:
        relative = plot.relative_to(path.parent)
    except ValueError:
        relative = plot
    lines += [
        "## B2 beside B3: the burst per second",
        "",
        f"![offered, accepted and received per second, flashgate vs direct]({relative})",
        "",
    ]
    lines += _chaos_section(chaos)
    if discussion.is_file():
        lines += [*DISCUSSION_INTRO, discussion.read_text().rstrip(), ""]
    path.write_text("\n".join(lines))


DISCUSSION_SEPARATOR = "---"
DISCUSSION_HEADING = "# Discussion (hand-written)"
DISCUSSION_INTRO = [
    DISCUSSION_SEPARATOR,
    "",
    DISCUSSION_HEADING,
    "",
    "Everything from here on is written by hand in `loadtest/discussion.md` and appended "
    "unchanged by `loadtest/report.py`; no script produces or checks it. Each figure "
    "names the command that produced it and the date it was measured, or is marked "
    "superseded; where it quotes a table above, the table is the record.",
    "",
]


CHAOS_HEADING = "## Faults mid-burst (`make chaos`)"
CHAOS_ORDERS = 5_000  # what every scenario sent before rows said so themselves
CHAOS_COLUMNS = [
    # (heading, field): "-" where a row has no such field (rows of older runs)
    ("stock", "stock"),
    ("accepted", "accepted"),
    ("stored", "stored"),
    ("lost", "lost"),
    ("stored twice", "stored_twice"),
    ("oversold", "oversold"),
    ("ghost", "ghost"),
    ("outcome_unknown", "outcome_unknown"),
    ("settled accepted", "unknown_accepted"),
    ("settled not_stored", "unknown_not_stored"),
    ("refused", "refused"),
]


def _cell(row: dict[str, Any], field: str) -> str:
    value = row.get(field)
    return "-" if value is None else _fmt(value)


def _chaos_section(path: Path) -> list[str]:
    """The fault suite's table (`make chaos` writes the JSON lines it reads)."""
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []
    lines = [
        CHAOS_HEADING,
        "",
        "Each scenario: 5,000 orders from storefront clients (same Idempotency-Key on every "
        "retry), one fault mid-burst, then what every shopper was told reconciled against the "
        "backend's table and the dead-letter topic, once every unknown outcome was settled "
        "and the drain had consumed every record. Most scenarios: ample stock, retrying "
        "shoppers, the fault after 1,500 were accepted. Paused broker: the broker's JVM "
        "stopped (SIGSTOP) for 8 s after 400 were accepted, longer than the produce and "
        "message timeouts (3 s, reservation TTL 4 s, reaper every 0.5 s), 2,000 units for "
        "5,000 buyers of one unit each; buyers who give up take the first answer as final "
        "(an `outcome_unknown` one is followed through its status, never re-sent). "
        "Command: `make chaos` (`pytest -m chaos tests/test_chaos.py`).",
        "",
        "accepted: orders whose shopper was told they were placed (202, or `outcome_unknown` "
        "and then settled accepted); lost: of those, neither stored nor dead-lettered; "
        "oversold: units stored beyond a SKU's stock, summed; ghost: stored orders whose "
        "shopper was told they failed (last answer neither 202 nor `outcome_unknown`, or "
        "`outcome_unknown` settled `not_stored`); outcome_unknown: orders answered so, and "
        "how they settled; refused: shoppers not told their order was placed. "
        "`-`: not measured in that run.",
        "",
        "| scenario | "
        + " | ".join(heading for heading, _ in CHAOS_COLUMNS)
        + " | client retries | recovered after fault (s) |",
        "| --- | " + " | ".join("---" for _ in CHAOS_COLUMNS) + " | --- | --- |",
    ]
    for row in rows:
        recover = row.get("recover_s")
        retries = row["attempts"] - row.get("orders", CHAOS_ORDERS)
        cells = [_cell(row, field) for _, field in CHAOS_COLUMNS]
        lines.append(
            f"| {row['scenario']} | {' | '.join(cells)} | {retries:,} "
            f"| {'' if recover is None else f'{recover:.1f}'} |"
        )
    lines.append("")
    return lines


def _ends_section(line: str) -> bool:
    """A generated section runs to the next heading or to the discussion's separator."""
    return line.startswith(("## ", "# ")) or line == DISCUSSION_SEPARATOR


def replace_chaos_section(report: Path, results: Path) -> None:
    """Rewrite only the fault suite's table in an existing report (after `make chaos`),
    leaving the benchmark tables and their date as they are."""
    lines = report.read_text().split("\n")
    section = _chaos_section(results)
    try:
        start = lines.index(CHAOS_HEADING)
    except ValueError:
        start = -1
    if start >= 0:
        end = next((i for i in range(start + 1, len(lines)) if _ends_section(lines[i])), len(lines))
        lines[start:end] = section
    else:
        discussion = next(
            (i for i, line in enumerate(lines) if line == DISCUSSION_SEPARATOR), len(lines)
        )
        lines[discussion:discussion] = section
    report.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Rewrite the chaos table of RESULTS.md.")
    parser.add_argument("--report", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--chaos", type=Path, default=HERE / "results" / "chaos.jsonl")
    args = parser.parse_args(argv)
    replace_chaos_section(args.report, args.chaos)
    print(f"wrote the chaos table of {args.report} from {args.chaos}")


if __name__ == "__main__":
    main()

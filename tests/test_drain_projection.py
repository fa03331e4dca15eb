"""The backlog projection (flashgate/drain/projection.py): pure arithmetic, exact answers."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from flashgate.drain.projection import (
    BacklogState,
    RateInputs,
    drain_seconds,
    project,
    seconds_until_fits,
)
from flashgate.drain.schedule import Schedule

PARIS = "Europe/Paris"


def at(text: str, zone: str = "UTC") -> float:
    """Unix time of a local wall-clock time, e.g. at("2026-12-03 22:00", PARIS)."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()


def flat(rate: float) -> Schedule:
    return Schedule.parse([], "UTC", rate)


def test_flat_rate_drains_backlog_over_rate() -> None:
    now = at("2026-12-03 12:00")
    assert drain_seconds(1000, now, flat(100), RateInputs()) == pytest.approx(10.0)
    assert drain_seconds(0, now, flat(100), RateInputs()) == 0.0


def test_a_window_change_ahead_is_integrated() -> None:
    # 100/s until 23:00, then 1000/s: 3,600 s at 100/s holds 360,000; 100,000 more at 1000/s.
    schedule = Schedule.parse(["09:00-23:00=100", "23:00-09:00=1000"], "UTC", 500)
    now = at("2026-12-03 22:00")
    assert drain_seconds(460_000, now, schedule, RateInputs()) == pytest.approx(3600 + 100)


def test_midnight_wrap_window() -> None:
    # 23:00-01:00 at 10/s wraps midnight; outside it 0/s.
    schedule = Schedule.parse(["23:00-01:00=10"], "UTC", 0)
    now = at("2026-12-03 23:30")
    # 1,800 s to midnight (18,000 orders), 3,600 s after it (36,000): then nothing until 23:00.
    assert drain_seconds(50_000, now, schedule, RateInputs()) == pytest.approx(1800 + 3200)
    later = drain_seconds(60_000, now, schedule, RateInputs())
    # 54,000 by 01:00; 6,000 more from 23:00 the next evening (22 h later) at 10/s.
    assert later == pytest.approx(5400 + 22 * 3600 + 600)


def test_daylight_saving_change_moves_boundaries_with_local_time() -> None:
    # Paris springs forward on 2026-03-29 at 02:00 local: 09:00 local is 07:00 UTC that day,
    # 08:00 UTC the day before. The slow window starts at 09:00 local on both.
    schedule = Schedule.parse(["09:00-23:00=1", "23:00-09:00=1000"], PARIS, 500)
    before = at("2026-03-28 23:00", PARIS)
    fast_span = at("2026-03-29 09:00", PARIS) - before
    assert fast_span == 9 * 3600  # 10 wall-clock hours, one of which does not exist
    records = fast_span * 1000 + 60  # then 60 s at 1/s
    assert drain_seconds(records, before, schedule, RateInputs()) == pytest.approx(fast_span + 60)


def test_pause_and_rate_zero_are_never() -> None:
    now = at("2026-12-03 12:00")
    assert drain_seconds(10, now, flat(100), RateInputs(paused=True)) is None
    assert drain_seconds(10, now, flat(0), RateInputs()) is None
    assert drain_seconds(10, now, flat(100), RateInputs(override_rate=0)) is None


def test_override_and_adaptive_lower_the_rate_never_raise_it() -> None:
    now = at("2026-12-03 12:00")
    assert drain_seconds(1000, now, flat(100), RateInputs(override_rate=50)) == pytest.approx(20)
    assert drain_seconds(1000, now, flat(100), RateInputs(override_rate=500)) == pytest.approx(10)
    adaptive = RateInputs(override_rate=50, adaptive_rate=25)
    assert drain_seconds(1000, now, flat(100), adaptive) == pytest.approx(40)


def test_headroom_while_draining_takes_the_later_of_oldest_and_newest() -> None:
    now = at("2026-12-03 12:00")
    state = BacklogState(backlog={0: 500, 1: 500}, oldest_at={0: now - 100, 1: now - 50})
    result = project(state, flat(10), RateInputs(), retention_s=1000, now=now)
    assert result.backlog == 1000
    assert result.empty_in_s == pytest.approx(100)
    assert result.admitted_delivered_in_s == pytest.approx(100.1)
    assert result.oldest_age_s == pytest.approx(100)
    # Oldest: 100 s old + 0.2 s for its turn; newest: delivered in 100 s. Later: 100.2.
    assert result.headroom_s == pytest.approx(1000 - 100.2)


def test_headroom_falls_by_the_second_while_paused() -> None:
    start = at("2026-12-03 12:00")
    state = BacklogState(backlog={0: 10}, oldest_at={0: start - 30})
    paused = RateInputs(paused=True)
    first = project(state, flat(10), paused, retention_s=1000, now=start)
    later = project(state, flat(10), paused, retention_s=1000, now=start + 7)
    assert first.never and first.empty_in_s is None
    assert first.headroom_s == pytest.approx(970)
    assert later.headroom_s == pytest.approx(963)


def test_no_backlog_has_full_headroom() -> None:
    now = at("2026-12-03 12:00")
    result = project(BacklogState(), flat(10), RateInputs(), retention_s=1000, now=now)
    assert (result.backlog, result.empty_in_s, result.oldest_at) == (0, 0.0, None)
    assert result.headroom_s == 1000


def test_seconds_until_fits_follows_the_schedule() -> None:
    # 36,000 ahead at 10/s until 13:00 then 100/s: delivered in 3,600 s (all at 10/s).
    schedule = Schedule.parse(["12:00-13:00=10"], "UTC", 100)
    now = at("2026-12-03 12:00")
    state = BacklogState(backlog={0: 36_000 + 1000}, oldest_at={0: now})
    result = project(state, schedule, RateInputs(), retention_s=10_000, now=now)
    assert result.admitted_delivered_in_s == pytest.approx(3600 + 10.01)
    assert seconds_until_fits(result, 3000) == pytest.approx(610.01)
    assert seconds_until_fits(result, 5000) == 0.0
    paused = project(state, schedule, RateInputs(paused=True), retention_s=10_000, now=now)
    assert seconds_until_fits(paused, 3000) is None


def test_beyond_the_horizon_is_never() -> None:
    now = datetime(2026, 12, 3, tzinfo=UTC).timestamp()
    assert drain_seconds(10**9, now, flat(1), RateInputs(), horizon_s=3600) is None

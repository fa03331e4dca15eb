"""Schedule windows and the rate policy on an injected clock: no waiting for 23:00."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from flashgate.drain.control import DrainOverride
from flashgate.drain.schedule import Schedule, parse_window
from flashgate.errors import ConfigError
from order_consumer.rate_policy import decide

PARIS = ZoneInfo("Europe/Paris")
DAY_NIGHT = ["09:00-23:00=100", "23:00-09:00=1000"]


def at(text: str, zone: ZoneInfo = PARIS) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=zone).timestamp()


def test_day_and_night_windows_switch_at_their_bounds() -> None:
    schedule = Schedule.parse(DAY_NIGHT, "Europe/Paris", 500)
    assert schedule.ceiling(at("2025-06-01T08:59:59")).rate_per_s == 1000
    assert schedule.ceiling(at("2025-06-01T09:00:00")).rate_per_s == 100
    assert schedule.ceiling(at("2025-06-01T22:59:59")).rate_per_s == 100
    night = schedule.ceiling(at("2025-06-01T23:00:00"))
    assert night.rate_per_s == 1000
    assert night.description == "23:00-09:00=1000 (Europe/Paris)"
    assert schedule.ceiling(at("2025-06-02T03:00:00")).rate_per_s == 1000


def test_windows_follow_local_time_across_daylight_saving() -> None:
    schedule = Schedule.parse(DAY_NIGHT, "Europe/Paris", 500)
    # 08:30 UTC is 09:30 in Paris in winter (day), 10:30 in summer (day); 07:30 UTC is
    # 08:30 in winter (night) but 09:30 in summer (day).
    utc = ZoneInfo("UTC")
    assert schedule.ceiling(at("2025-01-15T07:30:00", utc)).rate_per_s == 1000
    assert schedule.ceiling(at("2025-07-15T07:30:00", utc)).rate_per_s == 100


def test_gaps_fall_back_to_the_configured_rate_and_seconds_are_allowed() -> None:
    schedule = Schedule.parse(["12:00:30-12:01=7"], "UTC", 42)
    utc = ZoneInfo("UTC")
    assert schedule.ceiling(at("2025-01-01T12:00:29", utc)).rate_per_s == 42
    assert schedule.ceiling(at("2025-01-01T12:00:30", utc)).rate_per_s == 7
    outside = schedule.ceiling(at("2025-01-01T12:01:00", utc))
    assert outside.rate_per_s == 42
    assert outside.window is None
    assert "outside windows" in outside.description


def test_no_schedule_means_the_configured_rate() -> None:
    ceiling = Schedule.parse([], "UTC", 250).ceiling(0)
    assert (ceiling.rate_per_s, ceiling.description) == (250, "")


def test_equal_bounds_cover_the_whole_day() -> None:
    window = parse_window("00:00-00:00=5")
    assert all(window.contains(second) for second in (0, 43_200, 86_399))


@pytest.mark.parametrize(
    "specs",
    [
        ["09:00-23:00"],
        ["9-23=100"],
        ["25:00-01:00=1"],
        ["09:60-10:00=1"],
        ["09:00-23:00=100", "22:00-10:00=5"],
        ["00:00-00:00=5", "01:00-02:00=1"],
    ],
)
def test_bad_windows_are_refused(specs: list[str]) -> None:
    with pytest.raises(ConfigError):
        Schedule.parse(specs, "UTC", 1)


def test_unknown_time_zone_is_refused() -> None:
    with pytest.raises(ConfigError, match="time zone"):
        Schedule.parse([], "Mars/Olympus", 1)


def test_policy_takes_the_lowest_term_and_names_it() -> None:
    schedule = Schedule.parse(DAY_NIGHT, "Europe/Paris", 500)
    night = schedule.ceiling(at("2025-06-01T23:30:00"))
    day = schedule.ceiling(at("2025-06-01T12:00:00"))
    none = DrainOverride()

    d = decide(night, none, None)
    assert (d.effective_rate, d.reason, d.configured_rate) == (1000, "schedule", 1000)
    d = decide(day, none, None)
    assert (d.effective_rate, d.reason) == (100, "schedule")
    d = decide(night, DrainOverride(rate=300), None)
    assert (d.effective_rate, d.reason, d.override_rate) == (300, "override", 300)
    # An override cannot raise the ceiling above the schedule.
    d = decide(day, DrainOverride(rate=300), None)
    assert (d.effective_rate, d.reason) == (100, "schedule")
    d = decide(night, DrainOverride(rate=300), 120.0)
    assert (d.effective_rate, d.reason, d.adaptive_rate) == (120, "adaptive", 120)
    d = decide(night, DrainOverride(rate=300, paused=True), 120.0)
    assert (d.effective_rate, d.reason, d.paused) == (0, "paused", True)


def test_schedule_switch_at_23_with_an_injected_clock() -> None:
    schedule = Schedule.parse(DAY_NIGHT, "Europe/Paris", 500)
    start = at("2025-06-01T22:59:58")
    seen = [
        (decide(schedule.ceiling(start + step * 0.5), DrainOverride(), None).effective_rate)
        for step in range(8)
    ]
    assert seen == [100, 100, 100, 100, 1000, 1000, 1000, 1000]

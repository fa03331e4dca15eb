"""Schedule windows: the drain's ceiling by time of day, in a named time zone.

A window is written `HH:MM[:SS]-HH:MM[:SS]=<orders/s>`, for example
`"09:00-23:00=100"` and `"23:00-09:00=1000"`. It covers [start, end) in local
wall-clock time of the configured zone (so it follows daylight saving); an end
at or before the start wraps past midnight, and equal start and end mean all day.
Windows may not overlap; outside every window the configured `rate_per_s` is
the ceiling. Time is passed in (unix seconds), never read here, so tests can
cross 23:00 without waiting for it. Shared by the drain (the ceiling now) and the
projection of the backlog (`flashgate.drain.projection`: the ceilings ahead).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flashgate.errors import ConfigError

DAY_S = 24 * 3600

_WINDOW = re.compile(
    r"^\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*-\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*=\s*"
    r"([0-9]+(?:\.[0-9]*)?)\s*(?:/s)?\s*$"
)


@dataclass(frozen=True, slots=True)
class Window:
    start_s: int
    """Seconds after local midnight where the window begins (inclusive)."""
    end_s: int
    """Seconds after local midnight where it ends (exclusive); <= start wraps midnight."""
    rate_per_s: float
    text: str

    def contains(self, second_of_day: int) -> bool:
        if self.start_s == self.end_s:
            return True
        if self.start_s < self.end_s:
            return self.start_s <= second_of_day < self.end_s
        return second_of_day >= self.start_s or second_of_day < self.end_s

    def spans(self) -> list[tuple[int, int]]:
        """The window as half-open ranges within one day."""
        if self.start_s == self.end_s:
            return [(0, DAY_S)]
        if self.start_s < self.end_s:
            return [(self.start_s, self.end_s)]
        return [(self.start_s, DAY_S), (0, self.end_s)]


@dataclass(frozen=True, slots=True)
class Ceiling:
    """The schedule's answer for one instant."""

    rate_per_s: float
    window: Window | None
    description: str
    """What the progress report shows as `schedule` ("" when there is no schedule)."""


def _clock_seconds(hours: str, minutes: str, seconds: str | None, spec: str) -> int:
    h, m, s = int(hours), int(minutes), int(seconds or 0)
    if h > 24 or m > 59 or s > 59 or (h == 24 and (m or s)):
        raise ConfigError(f"drain.schedule: bad time of day in {spec!r}")
    return (h * 3600 + m * 60 + s) % DAY_S


def parse_window(spec: str) -> Window:
    match = _WINDOW.match(spec)
    if match is None:
        raise ConfigError(
            f"drain.schedule: {spec!r} is not HH:MM[:SS]-HH:MM[:SS]=<orders/s>, "
            'for example "09:00-23:00=100"'
        )
    start = _clock_seconds(match[1], match[2], match[3], spec)
    end = _clock_seconds(match[4], match[5], match[6], spec)
    return Window(start, end, float(match[7]), spec.strip())


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"drain.timezone: unknown time zone {name!r}") from exc


class Schedule:
    """The ceiling by time of day; `default_rate_per_s` outside every window."""

    def __init__(self, windows: list[Window], zone: ZoneInfo, default_rate_per_s: float) -> None:
        _reject_overlaps(windows)
        self.windows = windows
        self.zone = zone
        self.default_rate_per_s = default_rate_per_s

    @classmethod
    def parse(cls, specs: list[str], timezone: str, default_rate_per_s: float) -> Schedule:
        """Build from the settings; raises ConfigError naming the bad window or zone."""
        if default_rate_per_s < 0:
            raise ConfigError("drain.rate_per_s must be >= 0")
        return cls([parse_window(spec) for spec in specs], _zone(timezone), default_rate_per_s)

    def ceiling(self, now: float) -> Ceiling:
        """The ceiling in force at unix time `now`."""
        if not self.windows:
            return Ceiling(self.default_rate_per_s, None, "")
        local = datetime.fromtimestamp(now, self.zone)
        second = local.hour * 3600 + local.minute * 60 + local.second
        for window in self.windows:
            if window.contains(second):
                return Ceiling(window.rate_per_s, window, f"{window.text} ({self.zone.key})")
        return Ceiling(
            self.default_rate_per_s,
            None,
            f"outside windows: {self.default_rate_per_s:g}/s ({self.zone.key})",
        )

    def next_change(self, now: float) -> float | None:
        """The first instant after `now` where a window starts or ends (None without
        windows): between two such instants the ceiling is constant. Boundaries are
        local wall-clock times turned into unix time on their own day, so a daylight
        saving change moves them as it moves the drain."""
        if not self.windows:
            return None
        today = datetime.fromtimestamp(now, self.zone).date()
        marks = sorted({s for w in self.windows for s in (w.start_s, w.end_s)})
        for days in range(3):
            day = today + timedelta(days=days)
            midnight = datetime(day.year, day.month, day.day, tzinfo=self.zone)
            for second in marks:
                local = midnight + timedelta(seconds=second)
                # Wall-clock arithmetic, then the zone's offset at that wall time.
                at = local.replace(tzinfo=None).replace(tzinfo=self.zone).timestamp()
                if at > now:
                    return at
        return None


def _reject_overlaps(windows: list[Window]) -> None:
    for i, first in enumerate(windows):
        for second in windows[i + 1 :]:
            for a_start, a_end in first.spans():
                for b_start, b_end in second.spans():
                    if a_start < b_end and b_start < a_end:
                        raise ConfigError(
                            f"drain.schedule: windows {first.text!r} and {second.text!r} overlap"
                        )

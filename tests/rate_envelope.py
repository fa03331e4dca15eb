"""The rate limiter's envelope, checked on the timestamps of what it let through.

A token bucket (or GCRA) of `rate` per second and `burst` lets through at most
rate x elapsed + burst events in any interval; these helpers measure a series of
timestamps (the backend's, or the gateway's own) against that, never the wall clock
of the test.
"""

from __future__ import annotations

from collections.abc import Sequence


def excess_over_rate(times: Sequence[float], rate: float) -> float:
    """The largest count - rate x elapsed over every interval [t_i, t_j] of the series.

    A limiter of `rate` and `burst` keeps this at most `burst` (plus whatever the
    timestamps' own jitter compresses). An empty series has no excess.
    """
    ordered = sorted(times)
    if not ordered:
        return 0.0
    worst = float("-inf")
    best_start = float("-inf")  # max over i <= j of rate x t_i - i
    for j, t in enumerate(ordered):
        best_start = max(best_start, rate * t - j)
        worst = max(worst, (j + 1) - rate * t + best_start)
    return worst


def mean_rate(times: Sequence[float]) -> float:
    """Events per second between the first and the last timestamp (after the first)."""
    if len(times) < 2:
        return 0.0
    span = max(times) - min(times)
    return (len(times) - 1) / span if span > 0 else float("inf")


def within(times: Sequence[float], start: float, end: float) -> list[float]:
    """The timestamps in [start, end)."""
    return sorted(t for t in times if start <= t < end)

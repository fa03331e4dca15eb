"""The envelope arithmetic the end-to-end rate tests rely on, on made-up series."""

from __future__ import annotations

import pytest

from tests.rate_envelope import excess_over_rate, mean_rate, within


def test_an_even_series_at_the_rate_has_an_excess_of_one() -> None:
    # Events exactly 1/rate apart: any interval holds one more event than rate x span.
    times = [i / 100 for i in range(500)]
    assert excess_over_rate(times, 100) == pytest.approx(1.0)


def test_a_burst_at_the_start_shows_as_its_size() -> None:
    # 20 at once, then one every 1/rate: every interval from 0 holds 20 over rate x span.
    times = [0.0] * 20 + [0.01 * (i + 1) for i in range(300)]
    assert excess_over_rate(times, 100) == pytest.approx(20.0)


def test_a_burst_in_the_middle_is_found() -> None:
    steady = [i / 50 for i in range(100)]
    clump = [1.005] * 30
    assert excess_over_rate(steady + clump, 50) == pytest.approx(31.0, abs=1.0)
    assert excess_over_rate(steady, 50) == pytest.approx(1.0)


def test_a_slower_series_stays_under_the_envelope() -> None:
    times = [i / 40 for i in range(200)]
    assert excess_over_rate(times, 100) == pytest.approx(1.0)
    assert excess_over_rate([], 100) == 0.0


def test_mean_rate_and_within() -> None:
    times = [i / 40 for i in range(41)]
    assert mean_rate(times) == pytest.approx(40.0)
    assert mean_rate([1.0]) == 0.0
    assert within([3.0, 1.0, 2.0, 4.0], 2.0, 4.0) == [2.0, 3.0]

"""The adaptive limit (AIMD) on an injected clock."""

from __future__ import annotations

import pytest

from order_consumer.adaptive import AdaptiveConfig, AdaptiveLimit, Outcome


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def feed(limit: AdaptiveLimit, outcome: Outcome, n: int, latency_s: float = 0.005,
         retry_after_s: float | None = None) -> None:  # fmt: skip
    for _ in range(n):
        limit.record(outcome, latency_s, retry_after_s)


def make(**overrides: float) -> tuple[AdaptiveLimit, Clock]:
    clock = Clock()
    return AdaptiveLimit(AdaptiveConfig(**overrides), clock), clock


def test_healthy_backend_leaves_the_ceiling_alone() -> None:
    limit, clock = make()
    for _ in range(20):
        feed(limit, Outcome.OK, 50)
        clock.now += 0.25
        assert limit.update(1000) is None


def test_overload_halves_down_once_per_cooldown_then_climbs_back_to_the_ceiling() -> None:
    limit, clock = make(floor_per_s=10)
    feed(limit, Outcome.OVERLOADED, 5)
    clock.now += 0.25
    assert limit.update(1000) == pytest.approx(700)
    assert "overloaded" in limit.last_signal
    # Same episode within the cooldown: no second decrease.
    feed(limit, Outcome.OVERLOADED, 5)
    clock.now += 0.25
    assert limit.update(1000) == pytest.approx(700)
    clock.now += 1.0
    feed(limit, Outcome.OVERLOADED, 1)
    assert limit.update(1000) == pytest.approx(490)
    # Healthy again: +10 % of the ceiling per second until the ceiling lifts the limit.
    steps = 0
    while limit.limit is not None:
        feed(limit, Outcome.OK, 10)
        clock.now += 0.5
        limit.update(1000)
        steps += 1
        assert steps < 30
    assert steps == pytest.approx(11, abs=1)


def test_never_below_the_floor() -> None:
    limit, clock = make(floor_per_s=50)
    for _ in range(20):
        feed(limit, Outcome.ERROR, 10)
        clock.now += 1.0
        limit.update(1000)
    assert limit.limit == 50


def test_error_share_threshold() -> None:
    limit, clock = make(error_share=0.1)
    feed(limit, Outcome.OK, 95)
    feed(limit, Outcome.ERROR, 5)
    clock.now += 0.5
    assert limit.update(1000) is None
    feed(limit, Outcome.OK, 80)
    feed(limit, Outcome.ERROR, 20)
    clock.now += 0.5
    assert limit.update(1000) == pytest.approx(700)
    assert "errors" in limit.last_signal


def test_rejections_are_a_healthy_backend() -> None:
    limit, clock = make()
    feed(limit, Outcome.REJECTED, 100)
    clock.now += 0.5
    assert limit.update(1000) is None


def test_retry_after_holds_the_climb() -> None:
    limit, clock = make()
    feed(limit, Outcome.OVERLOADED, 1, retry_after_s=5)
    clock.now += 0.25
    assert limit.update(1000) == pytest.approx(700)
    for _ in range(4):  # 4 s of good answers, still inside Retry-After
        feed(limit, Outcome.OK, 10)
        clock.now += 1.0
        assert limit.update(1000) == pytest.approx(700)
    feed(limit, Outcome.OK, 10)
    clock.now += 1.0
    assert limit.update(1000) == pytest.approx(800)


def test_latency_rising_well_above_its_baseline_backs_off() -> None:
    limit, clock = make(latency_slack_s=0.05)
    for _ in range(8):
        feed(limit, Outcome.OK, 20, latency_s=0.010)
        clock.now += 0.25
        assert limit.update(1000) is None
    # Twice the baseline plus 50 ms: 70 ms. Noise below that is ignored...
    feed(limit, Outcome.OK, 20, latency_s=0.060)
    clock.now += 0.25
    assert limit.update(1000) is None
    # ...a queue building up is not.
    feed(limit, Outcome.OK, 20, latency_s=0.400)
    clock.now += 0.25
    assert limit.update(1000) == pytest.approx(700)
    assert "slow" in limit.last_signal


def test_a_lower_ceiling_caps_the_limit_and_no_answers_change_nothing() -> None:
    limit, clock = make()
    feed(limit, Outcome.OVERLOADED, 1)
    clock.now += 0.25
    assert limit.update(1000) == pytest.approx(700)
    clock.now += 5
    assert limit.update(1000) == pytest.approx(700)  # no answers: nothing learnt
    assert limit.update(200) == pytest.approx(200)
    assert limit.update(0) == pytest.approx(200)  # paused: left as it is

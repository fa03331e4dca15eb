"""The shedding decision (pure logic: lag samples in, admitted share out), the middleware
that applies it, and the lag probe on a real event loop.

The end-to-end crowd (2,000 connections against a real gateway, Kafka and Redis)
is in tests/test_flash_crowd.py.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from starlette.types import Message, Receive, Scope, Send

from gateway.loop_lag import LoopLag
from gateway.shed_policy import DECREASE, INCREASE, INTERVAL_S, MIN_FRACTION, ShedPolicy
from gateway.shedding import LoadShedder, ShedCounts

TARGET_S = 0.05
TICK_S = 0.01


def feed(policy: ShedPolicy, lag_s: float, seconds: float, start_s: float) -> float:
    """Ticks every TICK_S (each `lag_s` late) for `seconds` from `start_s`; the end time."""
    now = start_s
    while now < start_s + seconds - 1e-9:
        now += TICK_S + lag_s
        policy.observe(lag_s, now)
    return now


def admitted_share(policy: ShedPolicy, requests: int = 1000) -> float:
    return sum(policy.admit() for _ in range(requests)) / requests


def test_lag_within_target_sheds_nothing() -> None:
    policy = ShedPolicy(TARGET_S)
    feed(policy, 0.049, 5.0, 0.0)
    assert policy.fraction == 1.0
    assert admitted_share(policy) == 1.0


def test_a_lone_spike_sheds_nothing() -> None:
    """A single late tick (a GC pause, a neighbour on the CPU) among prompt ones: one
    window over target with none before it, so nothing is cut."""
    policy = ShedPolicy(TARGET_S)
    now = feed(policy, 0.001, 1.0, 0.0)
    policy.observe(0.4, now + 0.4)
    feed(policy, 0.001, 1.0, now + 0.4)
    assert policy.fraction == 1.0


def test_waves_with_prompt_ticks_between_still_shed() -> None:
    """Under a crowd uvloop alternates long iterations with short ones: most ticks of a
    window are on time, one is far late. That is a queue, and it is shed."""
    policy = ShedPolicy(TARGET_S)
    now = 0.0
    for _ in range(20):
        now = feed(policy, 0.001, 0.05, now)
        now += 0.12
        policy.observe(0.12, now)
    assert policy.fraction < 0.5


def test_standing_lag_cuts_the_share_each_window_down_to_the_floor() -> None:
    policy = ShedPolicy(TARGET_S)
    # Windows of ~INTERVAL_S at ticks 80 ms late: one decision per window.
    now = feed(policy, 0.08, 5 * INTERVAL_S, 0.0)
    # Five windows' worth of ticks close four or five windows (ticks and windows need
    # not line up); all but the first cut the share to DECREASE of itself.
    assert DECREASE**4 - 1e-9 <= policy.fraction <= DECREASE**3 + 1e-9
    # The share admitted is the fraction, spread evenly (no run of admissions).
    decisions = [policy.admit() for _ in range(1000)]
    assert sum(decisions) / 1000 == pytest.approx(policy.fraction, abs=0.01)
    longest_run = max(len(run) for run in "".join("1" if d else "0" for d in decisions).split("0"))
    assert longest_run <= 2
    feed(policy, 0.08, 10.0, now)
    assert policy.fraction == MIN_FRACTION
    # Never zero: a retrying shopper always has a way in.
    assert 0 < admitted_share(policy) <= MIN_FRACTION + 0.001


def test_recovers_within_a_second_once_the_lag_clears() -> None:
    policy = ShedPolicy(TARGET_S)
    now = feed(policy, 0.2, 5.0, 0.0)
    assert policy.fraction == MIN_FRACTION
    windows_to_whole = (1 - MIN_FRACTION) / INCREASE
    now = feed(policy, 0.002, windows_to_whole * INTERVAL_S * 1.3, now)
    assert policy.fraction == 1.0
    assert admitted_share(policy) == 1.0


def test_a_stuck_loop_is_cut_from_its_second_stall() -> None:
    """With the loop stuck, ticks come once per stall; each stall closes a window, and
    from the second on each cuts the share."""
    policy = ShedPolicy(TARGET_S)
    policy.observe(0.001, 0.0)
    policy.observe(0.3, 0.31)
    assert policy.fraction == 1.0
    policy.observe(0.3, 0.62)
    assert policy.fraction == pytest.approx(DECREASE)
    policy.observe(0.3, 0.93)
    assert policy.fraction == pytest.approx(DECREASE**2)


class Recorder:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def send(self, message: Message) -> None:
        self.messages.append(message)


async def never_receive() -> Message:
    raise AssertionError("a shed request's body must not be read")


async def served(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 202, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def scope(path: str) -> Scope:
    return {"type": "http", "path": path, "method": "POST", "headers": []}


def floor_policy() -> ShedPolicy:
    policy = ShedPolicy(TARGET_S)
    feed(policy, 0.5, 20.0, 0.0)
    assert policy.fraction == MIN_FRACTION
    return policy


def test_shed_answer_is_503_with_a_spread_retry_after_and_no_body_read() -> None:
    counts = ShedCounts()
    shedder = LoadShedder(served, limit=100, policy=floor_policy(), counts=counts, retry_after_s=2)
    statuses: list[int] = []
    retry_afters: set[int] = set()
    for _ in range(400):
        recorder = Recorder()
        asyncio.run(shedder(scope("/v1/orders"), never_receive, recorder.send))
        start, body = recorder.messages
        statuses.append(start["status"])
        if start["status"] == 503:
            headers = dict(start["headers"])
            retry_afters.add(int(headers[b"retry-after"]))
            assert headers[b"content-type"] == b"application/json"
            assert int(headers[b"content-length"]) == len(body["body"])
            assert json.loads(body["body"])["error"] == "unavailable"
    # At the floor a quarter is served, evenly.
    assert statuses.count(503) == counts.lag == 300
    assert statuses.count(202) == 100
    # Spread over 2..6 s so the turned-away crowd does not return in step.
    assert retry_afters <= set(range(2, 7)) and len(retry_afters) >= 3


def test_shed_answers_do_not_share_headers_an_outer_layer_may_change() -> None:
    shedder = LoadShedder(served, limit=0, policy=None, counts=ShedCounts())
    for _ in range(20):
        recorder = Recorder()
        asyncio.run(shedder(scope("/v1/orders"), never_receive, recorder.send))
        start = recorder.messages[0]
        assert len(start["headers"]) == 3
        start["headers"].append((b"access-control-allow-origin", b"https://shop.example"))


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/orders/x", "/openapi.json"])
def test_probes_metrics_and_pages_are_never_shed(path: str) -> None:
    counts = ShedCounts()
    shedder = LoadShedder(served, limit=0, policy=floor_policy(), counts=counts)
    for _ in range(50):
        recorder = Recorder()
        asyncio.run(shedder(scope(path), never_receive, recorder.send))
        assert recorder.messages[0]["status"] == 202
    assert counts.lag == counts.in_flight == 0


def test_the_in_flight_cap_sheds_past_its_count() -> None:
    counts = ShedCounts()
    release = asyncio.Event()

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        await release.wait()
        await served(scope, receive, send)

    shedder = LoadShedder(slow, limit=3, policy=None, counts=counts)

    async def crowd() -> list[int]:
        recorders = [Recorder() for _ in range(5)]
        # Tasks start in the order they were made: the first three fill the cap.
        tasks = [
            asyncio.create_task(shedder(scope("/v1/orders"), never_receive, r.send))
            for r in recorders
        ]
        await asyncio.wait(tasks[3:])  # answered at once, while three wait
        release.set()
        await asyncio.gather(*tasks)
        return [r.messages[0]["status"] for r in recorders]

    assert sorted(asyncio.run(crowd())) == [202, 202, 202, 503, 503]
    assert shedder.in_flight == 0


def test_lag_probe_measures_a_blocked_loop() -> None:
    samples: list[float] = []

    async def main() -> None:
        seen_stall = asyncio.Event()

        def observe(lag_s: float, now_s: float) -> None:
            samples.append(lag_s)
            if lag_s >= 0.15:
                seen_stall.set()

        probe = LoopLag(observe, interval_s=TICK_S)
        probe.start(asyncio.get_running_loop())
        await asyncio.sleep(TICK_S * 3)
        time.sleep(0.2)  # noqa: ASYNC251 - the point: the loop is stuck, the next tick overdue
        await asyncio.wait_for(seen_stall.wait(), 5)
        probe.stop()

    asyncio.run(main())
    # The tick that ends the stall reports it.
    assert max(samples) >= 0.15

"""SIGTERM ends the drain consumer at every moment of its life, within its bound, exit 0.

Real Kafka broker and Redis (session fixtures), the reference backend. Moments:
during start-up (before the worker exists), right after its partitions are
assigned, at random points while it delivers (where a lost cancellation once
left a background loop running forever: flashgate/task_cancel.py), and while
its partitions are paused. Each wait is on the log or the process, bounded.
"""

from __future__ import annotations

import random
import signal
from collections.abc import Iterator

import pytest

from flashgate.stack.process import ManagedProcess
from tests.services import ServiceEnv, Services, wait_until
from tests.test_drain_e2e import FILE_KEYS, log_text, produce_orders, stats, stored, write_config

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


# The consumer's own shutdown budget (backend_timeout_s = 10 s): requests on the wire
# get 10 + 1 s, then the revocation at close as long again plus 5 s of slack; the
# rest is a slow, shared machine. A healthy stop takes well under a second.
STOP_BOUND_S = 40.0
DELIVERY_ROUNDS = 20


@pytest.fixture
def drain_env(service_env: ServiceEnv) -> Iterator[ServiceEnv]:
    """The test's environment with the rates left to its settings file."""
    for key in FILE_KEYS:
        service_env.variables.pop(key, None)
    yield service_env


def stop_with_sigterm(consumer: ManagedProcess) -> None:
    consumer.send(signal.SIGTERM)
    assert consumer.wait(timeout_s=STOP_BOUND_S) == 0, log_text(consumer)[-3000:]
    assert "stopped: delivered" in log_text(consumer), log_text(consumer)[-3000:]


def started(consumer: ManagedProcess, line: str, timeout_s: float = 30) -> None:
    assert wait_until(lambda: line in log_text(consumer), timeout_s, interval_s=0.02), log_text(
        consumer
    )[-3000:]


def test_sigterm_during_startup_and_right_after_assignment(
    drain_env: ServiceEnv, services: Services
) -> None:
    write_config(drain_env, rate_per_s=300, burst=30)
    services.start_backend()
    produce_orders(drain_env.settings, 300)

    # Before the worker exists: the stop is kept and honoured once it does.
    early = services.start_consumer()
    started(early, "starting ")
    stop_with_sigterm(early)

    assigned = services.start_consumer()
    started(assigned, "assigned [")
    stop_with_sigterm(assigned)
    assert "revoked [" in log_text(assigned), log_text(assigned)[-3000:]


def test_sigterm_at_random_moments_of_deliveries(drain_env: ServiceEnv, services: Services) -> None:
    # The background loops call Redis almost back to back, so a stop mostly finds
    # them mid-call: where Python 3.11 can drop their cancellation.
    write_config(drain_env, rate_per_s=300, burst=30, config_poll_ms=1, progress_interval_ms=1)
    services.start_backend()
    produce_orders(drain_env.settings, 300 * DELIVERY_ROUNDS)
    for _ in range(DELIVERY_ROUNDS):
        consumer = services.start_consumer()
        started(consumer, "assigned [")
        target = stored(drain_env) + random.randint(1, 150)
        assert wait_until(lambda t=target: stored(drain_env) >= t, 20), stats(drain_env)
        stop_with_sigterm(consumer)
    # Each stop committed what it had delivered: the next consumer sent nothing again.
    assert stats(drain_env)["duplicates"] == 0


def test_sigterm_while_paused(drain_env: ServiceEnv, services: Services) -> None:
    write_config(drain_env, rate_per_s=0, burst=30)
    services.start_backend()
    produce_orders(drain_env.settings, 100)
    consumer = services.start_consumer()
    started(consumer, "pausing partitions (rate 0")
    stop_with_sigterm(consumer)
    assert stored(drain_env) == 0

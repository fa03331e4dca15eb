"""Merging the workers' own expositions into the gateway's one `/metrics` (pure logic,
on expositions the gateway's own registry renders)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from gateway.loop_lag import LoopLag
from gateway.metrics import GatewayMetrics
from gateway.shed_policy import ShedPolicy
from gateway.shedding import ShedCounts
from gateway.worker_peers import merge_worker_metrics

DRAIN = (
    "# HELP flashgate_drain_backlog Orders waiting\n"
    "# TYPE flashgate_drain_backlog gauge\n"
    "flashgate_drain_backlog {backlog}\n"
)


def _worker(answers: int, batches: list[int], ready: float, backlog: int) -> str:
    metrics = GatewayMetrics()
    for _ in range(answers):
        metrics.request("/v1/orders", 202)
        metrics.decision("accepted")
    for size in batches:
        metrics.batch_size.observe(size)
    metrics.in_flight = 2
    metrics.ready = ready
    return metrics.render().decode() + DRAIN.format(backlog=backlog)


def _samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def test_counters_and_histograms_are_summed_and_gauges_merged_by_meaning() -> None:
    texts: dict[int, str | None] = {
        0: _worker(3, [1, 4], ready=1.0, backlog=70),
        1: _worker(5, [64], ready=0.0, backlog=71),
        2: None,  # restarting: it did not answer
    }
    merged = _samples(merge_worker_metrics(texts, own=0))
    requests = ("flashgate_gateway_requests_total", (("route", "/v1/orders"), ("status", "202")))
    assert merged[requests] == 8
    assert merged[("flashgate_admission_decisions_total", (("decision", "accepted"),))] == 8
    assert merged[("flashgate_admission_batch_size_count", ())] == 3
    assert merged[("flashgate_admission_batch_size_sum", ())] == 69
    assert merged[("flashgate_admission_batch_size_bucket", (("le", "4.0"),))] == 2
    assert merged[("flashgate_gateway_in_flight", ())] == 4
    # Ready only when every answering worker is; the drain's gauge is the answerer's own.
    assert merged[("flashgate_gateway_ready", ())] == 0.0
    assert merged[("flashgate_drain_backlog", ())] == 70
    assert {
        labels: value for (name, labels), value in merged.items()
        if name == "flashgate_gateway_worker_up"
    } == {(("worker", "0"),): 1.0, (("worker", "1"),): 1.0, (("worker", "2"),): 0.0}  # fmt: skip
    per_worker = {
        labels: value for (name, labels), value in merged.items()
        if name == "flashgate_gateway_worker_requests_total"
    }  # fmt: skip
    assert per_worker == {(("worker", "0"),): 3.0, (("worker", "1"),): 5.0}


def _shedding_worker(lag_s: float, fraction: float, shed_lag: int) -> str:
    metrics = GatewayMetrics()
    counts = ShedCounts()
    counts.lag = shed_lag
    probe = LoopLag(lambda lag, now: None)
    probe.last_s = lag_s
    policy = ShedPolicy(0.05)
    policy.fraction = fraction
    metrics.watch_shedding(counts, probe, policy)
    return metrics.render().decode()


def test_shedding_is_merged_as_the_worst_worker_sees_it() -> None:
    """Each worker sheds by its own loop: the gateway's lag is the latest of them, its
    admitted share the lowest, and the sheds add up."""
    texts: dict[int, str | None] = {
        0: _shedding_worker(0.004, 1.0, shed_lag=0),
        1: _shedding_worker(0.180, 0.49, shed_lag=120),
    }
    merged = _samples(merge_worker_metrics(texts, own=0))
    assert merged[("flashgate_gateway_loop_lag_seconds", ())] == 0.180
    assert merged[("flashgate_gateway_admitted_fraction", ())] == 0.49
    assert merged[("flashgate_gateway_shed_total", (("signal", "lag"),))] == 120
    assert merged[("flashgate_gateway_shed_total", (("signal", "in_flight"),))] == 0

"""The drain gauges the gateway exports, read from a real Redis: what the alerts compute on.

Consumers are simulated by their progress reports (the same `publish` they call),
so each value is known exactly; tests/test_prometheus_stack.py scrapes the same
gauges from real consumer and gateway processes.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from flashgate.drain import progress
from flashgate.drain.control import DrainControl
from flashgate.settings import Settings, load_settings
from flashgate.stack.ports import free_port
from flashgate.stack.redis_server import RedisServer
from gateway.drain_metrics import DrainGauges


def _scrape(gauges: DrainGauges) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(gauges)
    text = generate_latest(registry).decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _report(consumer_id: str, *, effective: float, paused: bool) -> progress.ConsumerReport:
    return progress.ConsumerReport(
        consumer_id=consumer_id, configured_rate=200.0, override_rate=None,
        effective_rate=effective, paused=paused, reason="test", schedule="",
        delivered_per_second=effective, updated_at=time.time(),
    )  # fmt: skip


def _settings(tmp_path: Path, **environ: str) -> Settings:
    empty = tmp_path / "flashgate.toml"
    empty.write_text("")
    return load_settings(empty, environ=environ)


def test_gauges_follow_the_consumers_reports_and_the_pause(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    group = f"g-{uuid.uuid4().hex[:6]}"
    settings = _settings(
        tmp_path, FLASHGATE_DRAIN_GROUP_ID=group, FLASHGATE_KAFKA_RETENTION_MS="60000"
    )

    async def scenario() -> None:
        redis = Redis.from_url(redis_server.url)
        gauges = DrainGauges(settings)
        control = DrainControl(redis, group)
        try:
            await gauges.refresh(redis)
            before = _scrape(gauges)
            # No consumer yet: the configured rate, nothing waiting, no pause length.
            assert before["flashgate_drain_consumers"] == 0
            assert before["flashgate_drain_effective_rate_per_second"] == 500.0
            assert before["flashgate_drain_retention_seconds"] == 60.0
            assert "flashgate_drain_paused_seconds" not in before

            await progress.publish(redis, group, _report("c1", effective=150.0, paused=False),
                                   {0: (10, 30), 1: (5, 5)})  # fmt: skip
            await control.set_rate(120)
            await gauges.refresh(redis)
            running = _scrape(gauges)
            assert running["flashgate_drain_backlog_orders"] == 20
            assert running["flashgate_drain_effective_rate_per_second"] == 150.0
            assert running["flashgate_drain_resume_rate_per_second"] == 120.0
            assert running["flashgate_drain_consumers"] == 1
            assert running["flashgate_drain_paused"] == 0

            first = await control.set_paused(True)
            await asyncio.sleep(0.05)
            again = await control.set_paused(True)
            assert first.paused_at is not None and again.paused_at == first.paused_at
            await progress.publish(redis, group, _report("c1", effective=0.0, paused=True), {})
            await gauges.refresh(redis)
            paused = _scrape(gauges)
            assert paused["flashgate_drain_paused"] == 1
            assert paused["flashgate_drain_effective_rate_per_second"] == 0
            assert paused["flashgate_drain_resume_rate_per_second"] == 120.0
            assert 0.05 <= paused["flashgate_drain_paused_seconds"] < 10

            assert (await control.set_paused(False)).paused_at is None
            await gauges.refresh(redis)
            assert "flashgate_drain_paused_seconds" not in _scrape(gauges)
        finally:
            await redis.aclose()

    asyncio.run(scenario())


def test_no_samples_while_redis_cannot_be_read(tmp_path: Path) -> None:
    async def scenario() -> None:
        # Nothing listens there: a stale backlog must not keep an alert quiet.
        redis = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
        gauges = DrainGauges(_settings(tmp_path))
        try:
            await gauges.refresh(redis)
        finally:
            await redis.aclose()
        assert _scrape(gauges) == {}

    asyncio.run(scenario())

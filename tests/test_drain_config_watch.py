"""Live tuning: the settings file and ops' override reach a running consumer, logged old -> new."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import pytest
from redis.asyncio import Redis

from flashgate.drain.control import DrainControl
from flashgate.settings import load_settings
from flashgate.stack.redis_server import RedisServer
from order_consumer.config_watch import ConfigWatch


def test_file_and_override_changes_apply_and_are_logged(
    tmp_path: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "flashgate.toml"
    config.write_text("[drain]\nrate_per_s = 100.0\nburst = 10\n")

    async def scenario() -> None:
        redis = Redis.from_url(redis_server.url)
        control = DrainControl(redis, f"g-{uuid.uuid4().hex[:6]}")
        watch = ConfigWatch(load_settings(config, environ={}), control, path=config,
                            load=lambda p: load_settings(p, environ={}))  # fmt: skip
        try:
            await watch.poll()
            assert (watch.drain.rate_per_s, watch.override.rate) == (100.0, None)

            config.write_text(
                "[drain]\nrate_per_s = 300.0\nburst = 10\nconcurrency = 8\n"
                'schedule = ["09:00-23:00=100"]\ntimezone = "Europe/Paris"\n'
            )
            await control.set_rate(40)
            await control.set_paused(True)
            await watch.poll()
            assert watch.drain.rate_per_s == 300.0
            assert watch.drain.concurrency == 64  # needs a restart: not applied
            assert watch.schedule.windows[0].rate_per_s == 100
            assert (watch.override.rate, watch.override.paused) == (40.0, True)

            config.write_text('[drain]\nschedule = ["nonsense"]\n')
            await watch.poll()
            assert watch.drain.rate_per_s == 300.0  # a bad file changes nothing
        finally:
            await redis.aclose()

    with caplog.at_level(logging.INFO, logger="order_consumer.config_watch"):
        asyncio.run(scenario())
    text = caplog.text
    assert "drain.rate_per_s: 100.0 -> 300.0 (settings file)" in text
    assert "drain.concurrency: 64 -> 8 in the settings file needs a consumer restart" in text
    assert "drain override rate: none -> 40/s" in text
    assert "drain paused: False -> True" in text
    assert "not applied, keeping the settings in force" in text

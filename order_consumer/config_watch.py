"""Live tuning: re-read the settings file when it changes and ops' override from Redis.

`poll()` is called every `config_poll_ms` (250 ms by default), so a change of
either reaches this consumer within a second, with no restart. Every change is
logged old -> new. Only the keys in `LIVE_KEYS` apply live; a change of another
drain key is logged as needing a restart. A file that does not parse (or a
schedule that does not) is reported and the settings in force stay.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import msgspec

from flashgate.drain.control import DrainControl, DrainOverride
from flashgate.drain.schedule import Schedule
from flashgate.errors import ConfigError
from flashgate.redis_client import RedisFailureInLoop
from flashgate.settings import DrainSettings, Settings

log = logging.getLogger(__name__)

LIVE_KEYS = frozenset(
    {
        "rate_per_s",
        "burst",
        "schedule",
        "timezone",
        "max_attempts",
        "adaptive",
        "adaptive_floor_per_s",
        "adaptive_error_share",
        "adaptive_latency_slack_ms",
    }
)

FileStamp = tuple[int, int, int]


def _stamp(path: Path) -> FileStamp | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


class ConfigWatch:
    def __init__(
        self,
        settings: Settings,
        control: DrainControl,
        *,
        path: Path | None,
        load: Callable[[Path], Settings],
    ) -> None:
        self.drain = settings.drain
        self.schedule = Schedule.parse(
            settings.drain.schedule, settings.drain.timezone, settings.drain.rate_per_s
        )
        self.override = DrainOverride()
        self._control = control
        self._path = path
        self._load = load
        self._stamp = _stamp(path) if path is not None else None
        self._redis_ok = True

    async def poll(self) -> None:
        """Pick up a changed file and a changed override; log each change."""
        self._poll_file()
        await self._poll_override()

    def _poll_file(self) -> None:
        if self._path is None:
            return
        stamp = _stamp(self._path)
        if stamp is None or stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            new = self._load(self._path).drain
            schedule = Schedule.parse(new.schedule, new.timezone, new.rate_per_s)
        except ConfigError as exc:
            log.error("settings file %s not applied, keeping the settings in force: %s",
                      self._path, exc)  # fmt: skip
            return
        self._apply(new, schedule)

    def _apply(self, new: DrainSettings, schedule: Schedule) -> None:
        changes = {}
        for key in DrainSettings.__struct_fields__:
            old_value, new_value = getattr(self.drain, key), getattr(new, key)
            if old_value == new_value:
                continue
            if key in LIVE_KEYS:
                log.info("drain.%s: %r -> %r (settings file)", key, old_value, new_value)
                changes[key] = new_value
            else:
                log.warning(
                    "drain.%s: %r -> %r in the settings file needs a consumer restart",
                    key, old_value, new_value,
                )  # fmt: skip
        if changes:
            self.drain = msgspec.structs.replace(self.drain, **changes)
            self.schedule = schedule

    async def _poll_override(self) -> None:
        try:
            override = await self._control.get()
        except RedisFailureInLoop as exc:
            if self._redis_ok:
                log.warning("drain override unreadable, keeping %s: %s", self.override, exc)
            self._redis_ok = False
            return
        self._redis_ok = True
        old = self.override
        if (override.rate, override.paused) != (old.rate, old.paused):
            if override.rate != old.rate:
                log.info("drain override rate: %s -> %s", _rate(old.rate), _rate(override.rate))
            if override.paused != old.paused:
                log.info("drain paused: %s -> %s", old.paused, override.paused)
        self.override = override


def _rate(rate: float | None) -> str:
    return "none" if rate is None else f"{rate:g}/s"


def settings_path() -> Path | None:
    """The file this process's settings came from (FLASHGATE_CONFIG, else ./flashgate.toml)."""
    configured = os.environ.get("FLASHGATE_CONFIG")
    if configured:
        return Path(configured)
    local = Path("flashgate.toml")
    return local if local.is_file() else None

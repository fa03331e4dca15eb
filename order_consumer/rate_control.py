"""The group's drain rate, decided again on every control tick and handed to the limiter.

rate = min(schedule ceiling, ops override, adaptive limit), 0 while paused
(`rate_policy.decide`); the adaptive limit follows the backend's answers
(`adaptive.py`, fed by each delivery). A change is logged old -> new, except the
small steps of the adaptive limit (logged by the limit itself when it drops).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from order_consumer.adaptive import AdaptiveConfig, AdaptiveLimit
from order_consumer.config_watch import ConfigWatch
from order_consumer.group_limiter import GroupLimiter
from order_consumer.rate_policy import REASON_ADAPTIVE, RateDecision, decide, ops_ceiling

log = logging.getLogger(__name__)


class RateControl:
    def __init__(
        self,
        watch: ConfigWatch,
        limiter: GroupLimiter,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._watch = watch
        self._limiter = limiter
        self._wall_clock = wall_clock
        self.adaptive = AdaptiveLimit(self._adaptive_config())
        self.decision = self._decide()

    def refresh(self) -> None:
        """Decide the rate from the settings, override and backend now; apply it."""
        self.adaptive.config = self._adaptive_config()
        old, self.decision = self.decision, self._decide()
        self._limiter.set_rate(self.decision.effective_rate, self._watch.drain.burst)
        self._log_change(old, self.decision)

    def _adaptive_config(self) -> AdaptiveConfig:
        drain = self._watch.drain
        return AdaptiveConfig(
            floor_per_s=drain.adaptive_floor_per_s,
            error_share=drain.adaptive_error_share,
            latency_slack_s=drain.adaptive_latency_slack_ms / 1000,
        )

    def _decide(self) -> RateDecision:
        ceiling = self._watch.schedule.ceiling(self._wall_clock())
        override = self._watch.override
        if not self._watch.drain.adaptive:
            self.adaptive.limit = None
            return decide(ceiling, override, None)
        before = self.adaptive.limit
        adaptive = self.adaptive.update(ops_ceiling(ceiling, override)[0])
        if adaptive is not None and (before is None or adaptive < before):
            log.warning("adaptive: drain limited to %.1f/s: %s", adaptive,
                        self.adaptive.last_signal)  # fmt: skip
        elif adaptive is None and before is not None:
            log.info("adaptive: backend keeps up again, limit lifted")
        return decide(ceiling, override, adaptive)

    @staticmethod
    def _log_change(old: RateDecision, new: RateDecision) -> None:
        if new.reason == old.reason == REASON_ADAPTIVE:
            return
        if (new.effective_rate, new.reason, new.schedule) != (
            old.effective_rate, old.reason, old.schedule,
        ):  # fmt: skip
            log.info(
                "drain rate %g/s -> %g/s (%s%s)",
                old.effective_rate, new.effective_rate, new.reason,
                f": {new.schedule}" if new.schedule else "",
            )  # fmt: skip

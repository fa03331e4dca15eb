"""When to shed: the share of new public requests admitted, steered by event-loop lag.

The signal is the lag of the process's event loop (gateway.loop_lag): over each
`interval_s` window, the *largest* lag one of its ticks saw. Under a crowd the
loop does not fall behind evenly: uvloop alternates long iterations (a wave of
requests parsed and answered) with short ones, so some tick of almost every
window fires on time (a window's smallest lag stays near 0 while shoppers wait
seconds: measured at 1,000 connections) and the largest is what tracks the
wave. A lone spike (a GC pause) costs one window's cut, repaid within a few.

The response is additive-increase / multiplicative-decrease on the admitted
fraction (the AIMD shape of Netflix's concurrency-limits, on a share instead of
a count): each window over target multiplies it by `DECREASE`, each window under
target adds `INCREASE`. Requests are admitted by a credit counter, so a share of
0.3 admits about every third request evenly rather than in bursts; it never goes
below `MIN_FRACTION`, so a retrying shopper always has a way in and the loop
keeps measuring with real work.

What it guarantees: while no tick of a window runs later than target, nothing is
shed; each window with a tick later than target cuts the admitted share to
`DECREASE` of itself; once the lag clears, the share is whole again within
`(1 - MIN_FRACTION) / INCREASE` windows (one second at the defaults).
"""

from __future__ import annotations

INTERVAL_S = 0.1
DECREASE = 0.7
INCREASE = 0.1
MIN_FRACTION = 0.02


class ShedPolicy:
    def __init__(self, target_s: float, interval_s: float = INTERVAL_S) -> None:
        self.target_s = target_s
        self.interval_s = interval_s
        self.fraction = 1.0
        self._credit = 0.0
        self._window_end: float | None = None
        self._window_max = 0.0

    def observe(self, lag_s: float, now_s: float) -> None:
        """One lag sample taken at `now_s` (loop time)."""
        if self._window_end is None:
            self._window_end = now_s + self.interval_s
        self._window_max = max(self._window_max, lag_s)
        if now_s < self._window_end:
            return
        if self._window_max > self.target_s:
            self.fraction = max(MIN_FRACTION, self.fraction * DECREASE)
        else:
            self.fraction = min(1.0, self.fraction + INCREASE)
        # Windows follow each other without gaps (ticks need not line up with them);
        # after a stall the next one starts now.
        following = self._window_end + self.interval_s
        self._window_end = following if following > now_s else now_s + self.interval_s
        self._window_max = 0.0

    def admit(self) -> bool:
        """Whether to serve the request arriving now (False: shed it)."""
        if self.fraction >= 1.0:
            return True
        self._credit += self.fraction
        if self._credit >= 1.0:
            self._credit -= 1.0
            return True
        return False

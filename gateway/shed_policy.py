"""When to shed: the share of new public requests admitted, steered by event-loop lag.

The signal is the lag of the process's event loop (gateway.loop_lag): over each
`interval_s` window, the *largest* lag one of its ticks saw. Under a crowd the
loop does not fall behind evenly: uvloop alternates long iterations (a wave of
requests parsed and answered) with short ones, so some tick of almost every
window fires on time (a window's smallest lag stays near 0 while shoppers wait
seconds: measured at 1,000 connections) and the largest is what tracks the
wave. A window over target counts only when another of the `RECENT` windows before
it was over too: a lone spike (a GC pause, a neighbour taking the CPU for a moment)
sheds nothing, while a crowd's waves, which need not fill every window, do.

The response is additive-increase / multiplicative-decrease on the admitted
fraction (the AIMD shape of Netflix's concurrency-limits, on a share instead of
a count): each window over target multiplies it by `DECREASE`, each window under
target adds `INCREASE`. Requests are admitted by a credit counter, so a share of
0.3 admits about every third request evenly rather than in bursts.

It never goes below `MIN_FRACTION`, a quarter. Shedding inside the process only
saves the work after the request was parsed, and parsing is most of a request's
cost here (bare Hypercorn answers at 1.6-1.9 times the gateway's rate, B1, B8): a
crowd that needs more than three in four requests shed is mostly parse work, which
no decision taken after it reduces, so cutting further would turn away orders the
loop could still serve without making anyone's answer faster. Past that, only a
proxy in front that answers without Python helps (README "Flash crowds"). The
floor also gives a shopper who honours Retry-After a fair chance each try.

What it guarantees: while no two windows within `RECENT + 1` have a tick later
than target, nothing is shed; each window over target that follows another within
`RECENT` windows cuts the admitted share to `DECREASE` of itself; once the lag
clears, the share is whole again within `(1 - MIN_FRACTION) / INCREASE` windows
(under a second at the defaults).
"""

from __future__ import annotations

INTERVAL_S = 0.1
DECREASE = 0.7
INCREASE = 0.1
MIN_FRACTION = 0.25
# How many windows back an earlier window over target makes this one count.
RECENT = 3


class ShedPolicy:
    def __init__(self, target_s: float, interval_s: float = INTERVAL_S) -> None:
        self.target_s = target_s
        self.interval_s = interval_s
        self.fraction = 1.0
        self._credit = 0.0
        self._window_end: float | None = None
        self._window_max = 0.0
        self._recent_over = 0

    def observe(self, lag_s: float, now_s: float) -> None:
        """One lag sample taken at `now_s` (loop time)."""
        if self._window_end is None:
            self._window_end = now_s + self.interval_s
        self._window_max = max(self._window_max, lag_s)
        if now_s < self._window_end:
            return
        over = self._window_max > self.target_s
        if over and self._recent_over:
            self.fraction = max(MIN_FRACTION, self.fraction * DECREASE)
        elif not over:
            self.fraction = min(1.0, self.fraction + INCREASE)
        # One bit per window, newest lowest: which of the last RECENT were over target.
        self._recent_over = ((self._recent_over << 1) | over) & ((1 << RECENT) - 1)
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

"""When to shed: the share of new public requests admitted, steered by event-loop lag.

The signal is the lag of the process's event loop (gateway.loop_lag), judged the
way CoDel judges a queue: over each `interval_s` window, the *smallest* lag seen.
One slow iteration (a GC pause, a large batch) leaves that minimum low; only a
standing queue, where every tick of the window ran late, lifts it above
`target_s`.

The response is additive-increase / multiplicative-decrease on the admitted
fraction (the AIMD shape of Netflix's concurrency-limits, on a share instead of
a count): each window over target multiplies it by `DECREASE`, each window under
target adds `INCREASE`. Requests are admitted by a credit counter, so a share of
0.3 admits every third-or-so request evenly rather than in bursts; it never goes
below `MIN_FRACTION`, so a retrying shopper always has a way in and the loop
keeps measuring with real work.

What it guarantees: while some tick of every window runs within target, nothing
is shed; a standing lag above target cuts the admitted share to `DECREASE` of
itself each window until the lag clears; once it clears, the share is whole
again within `(1 - MIN_FRACTION) / INCREASE` windows (one second at the defaults).
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
        self._window_min = float("inf")

    def observe(self, lag_s: float, now_s: float) -> None:
        """One lag sample taken at `now_s` (loop time)."""
        if self._window_end is None:
            self._window_end = now_s + self.interval_s
        self._window_min = min(self._window_min, lag_s)
        # A stall longer than a window filled the window it closes: no prompt tick
        # earlier in that window speaks for it.
        stalled = lag_s >= self.interval_s and lag_s > self.target_s
        if now_s < self._window_end and not stalled:
            return
        if stalled or self._window_min > self.target_s:
            self.fraction = max(MIN_FRACTION, self.fraction * DECREASE)
        else:
            self.fraction = min(1.0, self.fraction + INCREASE)
        # Windows follow each other without gaps (ticks need not line up with them);
        # after a stall the next one starts now.
        following = self._window_end + self.interval_s
        self._window_end = following if following > now_s else now_s + self.interval_s
        self._window_min = float("inf")

    def admit(self) -> bool:
        """Whether to serve the request arriving now (False: shed it)."""
        if self.fraction >= 1.0:
            return True
        self._credit += self.fraction
        if self._credit >= 1.0:
            self._credit -= 1.0
            return True
        return False

"""What a 4xx from the backend says: this order is bad, or the backend refuses every order.

401, 403, 404, 405, 407, 410 and 415 and 426 speak of credentials, route or
protocol: every order would get the same answer, so the drain pauses (the
backend gate) and never dead-letters for them. 400, 409, 422 and any other 4xx
are this order's fault and dead-letter it, unless a storm says otherwise:

`RefusalBreaker` counts the different orders refused in a row with one status.
When `threshold` of them were refused within `window_s` (a backend that started
answering 400 to everything after a deploy), the next one of that status is no
longer dead-lettered but held as a refusal, until a delivery gets through. The
orders dead-lettered in the storm are then handed back (`take_replay`) for the
worker to produce to the orders topic again; the backend is idempotent on the
order id, so a later `flashgate dlq replay` of the same letters stores nothing twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from flashgate.dlq import Headers

log = logging.getLogger(__name__)

REFUSING_STATUSES = frozenset({401, 403, 404, 405, 407, 410, 415, 426})
"""The backend refuses every order: never dead-letter, pause and alarm."""

STORM_ORDERS = 20
STORM_WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class StormLetter:
    """A dead letter written during a storm: what it takes to produce the order again."""

    key: bytes | None
    value: bytes
    headers: Headers


class RefusalBreaker:
    """Turns a run of per-order refusals with one status into a refusal of the backend."""

    def __init__(
        self,
        threshold: int = STORM_ORDERS,
        window_s: float = STORM_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = max(1, threshold)
        self._window_s = window_s
        self._clock = clock
        self._status: int | None = None
        self._orders: set[str] = set()
        self._since = 0.0
        self._letters: list[StormLetter] = []
        self._replay: list[StormLetter] = []
        self.storm_status: int | None = None
        """The status of the storm in force (deliveries held), None when there is none."""

    def storm(self, status: int, order_id: str) -> bool:
        """An order was refused with `status`: True if that is a storm (hold, do not
        dead-letter it), False if the order alone is at fault."""
        if self.storm_status == status:
            return True
        now = self._clock()
        if status != self._status or now - self._since > self._window_s:
            self._start_streak(status, now)
        self._orders.add(order_id)
        if len(self._orders) < self._threshold:
            return False
        self.storm_status = status
        log.error(
            "%d different orders refused with %d within %.0f s: holding deliveries instead of "
            "dead-lettering the rest; the %d dead-lettered in this storm are replayed once "
            "the backend takes orders again",
            len(self._orders), status, self._window_s, len(self._letters),
        )  # fmt: skip
        return True

    def dead_lettered(self, status: int | None, letter: StormLetter) -> None:
        """The worker dead-lettered an order refused with `status`: kept while its streak lasts."""
        if status is not None and status == self._status:
            self._letters.append(letter)

    def succeeded(self) -> None:
        """A delivery got through: the streak ends; a storm's letters are due for replay."""
        if self.storm_status is not None:
            log.warning("backend takes orders again: %d orders of the %d storm to replay",
                        len(self._letters), self.storm_status)  # fmt: skip
            self._replay.extend(self._letters)
        self.storm_status = None
        self._status = None
        self._orders.clear()
        self._letters = []

    def take_replay(self) -> list[StormLetter]:
        """The letters to produce to the orders topic again (each handed out once)."""
        letters, self._replay = self._replay, []
        return letters

    def _start_streak(self, status: int, now: float) -> None:
        self._status = status
        self._since = now
        self._orders.clear()
        self._letters = []

"""Is the backend up? A circuit breaker in front of every delivery attempt.

- closed: deliveries go;
- open: the backend is down (a delivery used up a round of retries and nothing
  got through meanwhile); every attempt waits, and the worker pauses its Kafka
  partitions; after a backoff (doubling up to `max_backoff_s`, at least the
  backend's Retry-After) the gate half-opens;
- half-open: exactly one attempt goes through as the probe (a real order, so
  the probe needs no special endpoint); its success closes the gate, its
  failure opens it again for longer.

A success from any request closes the gate: the backend is evidently up.

A refusal (`refused()`: the backend answers 401, 403, 404... to every order, or
a storm of one status) opens the gate at once, without a round of retries: it
says the backend will take nothing until someone fixes credentials or route.
`refusal` holds the status and the backend's message until a delivery gets through.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

INITIAL_BACKOFF_S = 0.5
MAX_BACKOFF_S = 10.0


class GateState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why the backend refuses every order: its status and (the start of) its answer."""

    status: int
    message: str


class BackendGate:
    def __init__(
        self,
        *,
        probe_timeout_s: float,
        initial_backoff_s: float = INITIAL_BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state = GateState.CLOSED
        self.successes = 0
        """Deliveries that got through, ever: compare two readings to see if any did meanwhile."""
        self._probe_timeout_s = probe_timeout_s
        self._initial_backoff_s = initial_backoff_s
        self._max_backoff_s = max_backoff_s
        self._clock = clock
        self._backoff_s = initial_backoff_s
        self._reopen_at = 0.0
        self._probe_deadline: float | None = None
        self._changed = asyncio.Event()
        self.refusal: Refusal | None = None
        """Set while the gate is open because the backend refuses every order."""

    @property
    def closed(self) -> bool:
        return self.state is GateState.CLOSED

    async def permit(self) -> None:
        """Return when this attempt may go to the backend."""
        while True:
            now = self._clock()
            if self.state is GateState.CLOSED:
                return
            if self.state is GateState.OPEN:
                if now >= self._reopen_at:
                    self.state = GateState.HALF_OPEN
                    self._probe_deadline = None
                    continue
                await self._wait(self._reopen_at - now)
                continue
            # Half-open: one probe at a time; a probe that never reports (its delivery
            # was cancelled) is replaced after the probe timeout.
            if self._probe_deadline is None or now >= self._probe_deadline:
                self._probe_deadline = now + self._probe_timeout_s
                log.info("backend probe: sending one order")
                return
            await self._wait(self._probe_deadline - now)

    def succeeded(self) -> None:
        self.successes += 1
        if self.state is not GateState.CLOSED:
            log.warning("backend is back: resuming deliveries")
            self.state = GateState.CLOSED
            self.refusal = None
            self._backoff_s = self._initial_backoff_s
            self._notify()

    def failed(self, retry_after_s: float | None = None) -> None:
        """An attempt failed; while half-open that was the probe: open again, for longer."""
        if self.state is GateState.HALF_OPEN and self._probe_deadline is not None:
            self._backoff_s = min(self._max_backoff_s, self._backoff_s * 2)
            self._open(retry_after_s)
            log.warning(
                "backend probe failed: next probe in %.1f s", self._reopen_at - self._clock()
            )

    def trip(self, reason: str, retry_after_s: float | None = None) -> None:
        """The backend looks down: hold every delivery until a probe gets through."""
        if self.state is GateState.CLOSED:
            self._backoff_s = self._initial_backoff_s
            self._open(retry_after_s)
            log.warning("backend down (%s): holding deliveries, pausing partitions", reason)

    def refused(self, status: int, message: str) -> None:
        """The backend refuses every order: hold deliveries now, and say why until it takes one."""
        refusal = Refusal(status, message)
        if self.state is GateState.CLOSED:
            self._backoff_s = self._initial_backoff_s
            self.refusal = refusal
            self._open(None)
            log.error(
                "backend refuses every order (%d %s): holding deliveries, pausing partitions; "
                "nothing is dead-lettered for it",
                status, message,
            )  # fmt: skip
            return
        if refusal != self.refusal:
            log.error("backend refuses every order (%d %s)", status, message)
        self.refusal = refusal
        self.failed()

    def _open(self, retry_after_s: float | None) -> None:
        self.state = GateState.OPEN
        self._probe_deadline = None
        self._reopen_at = self._clock() + max(self._backoff_s, retry_after_s or 0.0)
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait(self, timeout_s: float) -> None:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can drop a
        # cancellation (see flashgate/task_cancel.py).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, timeout_s)):
                await self._changed.wait()

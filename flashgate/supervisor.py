"""Keep child processes running: restart one that dies, with backoff and a log line,
and give up (naming it and why) on one that keeps crashing.

One loop serves the three supervisors of flashgate: `flashgate up` (Redis, Kafka,
backend, consumer, gateway), the gateway's workers (`[gateway] workers`) and the
drain's processes (`[drain] processes`). It is synchronous on purpose: the
supervising process does nothing else, so it needs no event loop that a stuck
child could starve.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from flashgate.errors import CrashLoop
from flashgate.stack.process import ManagedProcess

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0
# More exits than this within the window and the supervisor stops everything.
CRASH_LIMIT = 5
CRASH_WINDOW_S = 60.0
POLL_S = 0.2


@dataclass(frozen=True)
class RestartPolicy:
    backoff_first_s: float = BACKOFF_FIRST_S
    backoff_max_s: float = BACKOFF_MAX_S
    crash_limit: int = CRASH_LIMIT
    crash_window_s: float = CRASH_WINDOW_S

    def backoff_s(self, recent_exits: int) -> float:
        """Doubles with each exit inside the window: 0.5, 1, 2, ... up to the maximum."""
        doubled: float = self.backoff_first_s * 2.0 ** max(0, recent_exits - 1)
        return min(self.backoff_max_s, doubled)


@dataclass
class _Child:
    process: ManagedProcess
    restarts: int = 0
    last_exit: int | None = None
    exits: deque[float] = field(default_factory=deque)
    restart_at: float | None = None


class Supervisor:
    """Watches `ManagedProcess`es that are already started (`add`) or to start (`start`)."""

    def __init__(
        self,
        *,
        policy: RestartPolicy | None = None,
        record: Path | None = None,
        say: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy or RestartPolicy()
        # A JSON file with each child's restarts, for `flashgate status`.
        self.record = record
        self._say = say or log.warning
        self._clock = clock
        self._children: list[_Child] = []

    @property
    def processes(self) -> list[ManagedProcess]:
        return [child.process for child in self._children]

    def add(self, process: ManagedProcess) -> None:
        self._children.append(_Child(process))
        self._write_record()

    def start(self, process: ManagedProcess) -> None:
        process.start()
        self.add(process)

    def restarts(self) -> dict[str, int]:
        return {child.process.name: child.restarts for child in self._children}

    def check(self) -> None:
        """One round: note exits, restart those whose backoff is over.

        Raises CrashLoop when a child exited more than `crash_limit` times within
        `crash_window_s`."""
        now = self._clock()
        for child in self._children:
            process = child.process
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.restart_at = None
                    process.start()
                    child.restarts += 1
                    self._say(
                        f"{process.name} restarted (pid {process.pid}, restart {child.restarts})"
                    )
                    self._write_record()
                continue
            if process.running():
                continue
            child.last_exit = process.exit_code()
            child.exits.append(now)
            while child.exits and now - child.exits[0] > self.policy.crash_window_s:
                child.exits.popleft()
            if len(child.exits) > self.policy.crash_limit:
                raise CrashLoop(process.name, child.last_exit, len(child.exits),
                                self.policy.crash_window_s)  # fmt: skip
            delay = self.policy.backoff_s(len(child.exits))
            child.restart_at = now + delay
            self._say(f"{process.name} exited with {child.last_exit}; restarting in {delay:g} s")

    def run(self, stop: threading.Event) -> None:
        """Check until `stop` is set; CrashLoop propagates."""
        while not stop.wait(POLL_S):
            self.check()

    def stop_in_order(self, timeout_s: float = 15.0) -> None:
        """Stop the children one by one, last added first (the stack's order)."""
        for child in reversed(self._children):
            child.process.stop(timeout_s)
        self._forget_record()

    def stop_together(self, timeout_s: float) -> None:
        """SIGTERM every child at once, then wait for each (workers drain in parallel)."""
        children = [child.process for child in self._children]
        for process in children:
            process.send(signal.SIGTERM)
        if children:
            with ThreadPoolExecutor(max_workers=len(children)) as pool:
                list(pool.map(lambda p: p.stop(timeout_s), children))
        self._forget_record()

    def _forget_record(self) -> None:
        # Nothing runs any more: a stale record would show restarts of nothing.
        if self.record is not None:
            self.record.unlink(missing_ok=True)

    def _write_record(self) -> None:
        if self.record is None:
            return
        record = {
            child.process.name: {
                "pid": child.process.pid,
                "restarts": child.restarts,
                "last_exit": child.last_exit,
            }
            for child in self._children
        }
        self.record.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.record.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        tmp.replace(self.record)


RECORDS = ("stack.json", "gateway-workers.json", "drain-processes.json")


def read_records(paths: Sequence[Path]) -> dict[str, dict[str, int | None]]:
    """Every child of the supervisors whose records exist: name -> pid, restarts, last exit."""
    children: dict[str, dict[str, int | None]] = {}
    for path in paths:
        try:
            children |= json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return children


def stop_on_signals(stop: threading.Event) -> list[str]:
    """SIGINT and SIGTERM set `stop`; the returned list gets the signal's name."""
    why: list[str] = []

    def on_signal(signum: int, frame: object) -> None:
        why.append(signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return why

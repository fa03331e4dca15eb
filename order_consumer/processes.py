"""The drain's supervisor when `[drain] processes` is not 1: start N consumer processes
of the one group on this machine, restart one that dies, stop them all on SIGTERM.

Each is `python -m order_consumer.main --process I`, a whole consumer (its own Kafka
consumer, partitions from the group's rebalance, backend session); they share the
group's one rate through its Redis limiter, as consumers on several machines do.
Only process 0 serves `[drain] health_port` (one port, one listener).
"""

from __future__ import annotations

import logging
import os
import sys
import threading

from flashgate.errors import CrashLoop
from flashgate.settings import Settings
from flashgate.stack.process import ManagedProcess
from flashgate.supervisor import Supervisor, stop_on_signals

log = logging.getLogger(__name__)

# A consumer finishes the requests on the wire (backend_timeout_s) and commits.
STOP_GRACE_S = 15.0


def consumer_processes(count: int) -> list[ManagedProcess]:
    env = dict(os.environ)
    others = env | {"FLASHGATE_DRAIN_HEALTH_PORT": "0"}
    return [
        ManagedProcess(
            f"drain-process-{index}",
            [sys.executable, "-m", "order_consumer.main", "--process", str(index)],
            log_path=None,
            env=env if index == 0 else others,
        )
        for index in range(count)
    ]


def run_processes(settings: Settings, count: int) -> int:
    """Supervise `count` consumers until a signal (exit 0) or a crash loop (exit 1)."""
    stop = threading.Event()
    why = stop_on_signals(stop)
    supervisor = Supervisor(record=settings.state_dir.resolve() / "run" / "drain-processes.json")
    log.info("drain: %d consumer processes in group %s", count, settings.drain.group_id)
    code = 0
    try:
        for process in consumer_processes(count):
            supervisor.start(process)
        supervisor.run(stop)
        log.info("drain: %s, stopping %d consumers", why[0] if why else "stopping", count)
    except CrashLoop as exc:
        log.error("drain: %s; stopping every consumer", exc)
        code = 1
    finally:
        supervisor.stop_together(settings.drain.backend_timeout_s + STOP_GRACE_S)
    log.info("drain stopped")
    return code

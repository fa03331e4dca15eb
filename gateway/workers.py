"""The gateway's supervisor when `[gateway] workers` is not 1: start N workers, restart
one that dies, and on SIGTERM or SIGINT drain them all at once.

Each worker is `python -m gateway.main --worker I ...`: its own process, with its
own SO_REUSEPORT listener on the public port (see `gateway.main.reuseport_listener`)
and its own producer, batchers and sold-out cache. This process opens one private
loopback listener per worker for its metrics (so a restarted worker gets the
same one, and its peers find it where it was) and passes it down; it serves
no request itself.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading

from flashgate.errors import CrashLoop
from flashgate.settings import Settings
from flashgate.stack.process import ManagedProcess
from flashgate.supervisor import Supervisor, stop_on_signals

log = logging.getLogger(__name__)

# A worker drains for Hypercorn's graceful timeout, then flushes its producer.
STOP_TIMEOUT_S = 40.0


def _metrics_listener(avoid: set[int]) -> socket.socket:
    """A loopback socket on a port the kernel picks, never one of `avoid`: a configured
    port in the ephemeral range (the admin port, say) is free until a worker binds
    it, so the kernel may hand it out here first."""
    while True:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        if sock.getsockname()[1] not in avoid:
            sock.set_inheritable(True)
            return sock
        sock.close()


def worker_processes(
    count: int, avoid: set[int]
) -> tuple[list[ManagedProcess], list[socket.socket]]:
    """The workers to start, and the metrics listeners they inherit (keep them open);
    `avoid`: ports the workers bind themselves."""
    listeners = [_metrics_listener(avoid) for _ in range(count)]
    ports = ",".join(str(sock.getsockname()[1]) for sock in listeners)
    workers = [
        ManagedProcess(
            f"gateway-worker-{index}",
            [
                sys.executable,
                "-m",
                "gateway.main",
                "--worker",
                str(index),
                "--of",
                str(count),
                "--metrics-fd",
                str(sock.fileno()),
                "--metrics-ports",
                ports,
            ],
            log_path=None,
            pass_fds=[sock.fileno()],
        )
        for index, sock in enumerate(listeners)
    ]
    return workers, listeners


def run_workers(settings: Settings, count: int) -> int:
    """Supervise `count` workers until a signal (exit 0) or a crash loop (exit 1)."""
    stop = threading.Event()
    why = stop_on_signals(stop)
    state = settings.state_dir.resolve()
    supervisor = Supervisor(record=state / "run" / "gateway-workers.json")
    gw, ad = settings.gateway, settings.admin
    workers, listeners = worker_processes(count, {gw.port, ad.port})
    log.info("gateway: %d workers on http://%s:%d", count, settings.gateway.host,
             settings.gateway.port)  # fmt: skip
    code = 0
    try:
        for worker in workers:
            supervisor.start(worker)
        supervisor.run(stop)
        log.info("gateway: %s, draining %d workers", why[0] if why else "stopping", count)
    except CrashLoop as exc:
        log.error("gateway: %s; stopping every worker", exc)
        code = 1
    finally:
        supervisor.stop_together(STOP_TIMEOUT_S)
        for sock in listeners:
            sock.close()
    log.info("gateway stopped")
    return code

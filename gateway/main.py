"""Run the gateway on Hypercorn: `flashgate-gateway` (settings from flashgate.toml + env).

With `[gateway] workers = 1` one process serves two listeners from one event
loop: the public API (settings.gateway) and the admin API (settings.admin), with
one shutdown trigger. On SIGTERM both stop accepting, in-flight requests finish,
then each app's lifespan shutdown runs (the public one flushes the Kafka producer).

With more workers (0 = one per usable CPU) this process becomes their supervisor
(`gateway.workers`) and each worker runs `serve_gateway` with its `WorkerRole`:
its own SO_REUSEPORT listener on the public port, its own producer, batchers
and sold-out cache; worker 0 also serves the one admin listener.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass

import uvloop
from hypercorn.asyncio import serve
from hypercorn.config import Config

from flashgate.cpus import resolve_count
from flashgate.logs import configure_logging
from flashgate.settings import Settings, load_settings
from gateway.admin.app import create_admin_app
from gateway.admin.token import ensure_admin_token, token_path
from gateway.app import create_app
from gateway.metrics import own_metrics
from gateway.soldout import SoldOutCache
from gateway.worker_peers import PeerMetrics, PrivateApp
from gateway.workers import run_workers

log = logging.getLogger(__name__)

GRACEFUL_TIMEOUT_S = 15.0


def hypercorn_config(host: str, port: int) -> Config:
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.graceful_timeout = GRACEFUL_TIMEOUT_S
    # Limits that keep a slow or hostile client from holding resources.
    config.h11_max_incomplete_size = 16 * 1024
    config.keep_alive_timeout = 30
    config.read_timeout = 30
    config.backlog = 2048
    return config


def reuseport_listener(host: str, port: int) -> int:
    """A socket bound to the public port with SO_REUSEPORT; its descriptor, for Hypercorn.

    Each worker has its own listener, so the kernel spreads new connections over the
    workers that listen (even for a few long keep-alive connections, where one
    shared accept queue favours whichever worker wakes first), and a worker that
    dies leaves the group at once: its share goes to the others. Hypercorn listens
    only after the app's lifespan started, so a restarting worker takes no
    connection before its producer is up."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    return sock.detach()


@dataclass(frozen=True)
class WorkerRole:
    """One of `count` workers: its index, and the private metrics listeners of all
    of them (its own is the inherited socket `metrics_fd`)."""

    index: int
    count: int
    metrics_fd: int
    metrics_ports: tuple[int, ...]


async def serve_gateway(settings: Settings, role: WorkerRole | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    token = ensure_admin_token(settings)
    sold_out = SoldOutCache(settings.gateway.sold_out_cache_ms / 1000)
    public = create_app(settings, sold_out=sold_out)
    gw, ad = settings.gateway, settings.admin
    public_config = hypercorn_config(gw.host, gw.port)
    if role is not None:
        public_config.bind = [f"fd://{reuseport_listener(gw.host, gw.port)}"]
    servers = [serve(public, public_config, shutdown_trigger=stop.wait)]  # type: ignore[arg-type]
    peers = None if role is None else PeerMetrics(role.index, role.metrics_ports)
    if role is not None:
        public.state.peer_metrics = peers
        private = Config()
        private.bind = [f"fd://{role.metrics_fd}"]
        private.accesslog = None
        app = PrivateApp(lambda: own_metrics(public), sold_out)
        servers.append(serve(app, private, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    name = "gateway" if role is None else f"gateway worker {role.index} (pid {os.getpid()})"
    log.info("%s listening on http://%s:%d", name, gw.host, gw.port)
    if role is None or role.index == 0:
        admin = create_admin_app(settings, token, sold_out)
        # A reload clears the sold-out memory of the other workers too.
        admin.state.peers = peers
        servers.append(serve(admin, hypercorn_config(ad.host, ad.port), shutdown_trigger=stop.wait))  # type: ignore[arg-type]
        log.info(
            "admin listening on http://%s:%d (token %s)",
            ad.host,
            ad.port,
            "from FLASHGATE_ADMIN_TOKEN" if settings.admin.token else f"in {token_path(settings)}",
        )
    await asyncio.gather(*servers)
    log.info("%s stopped", name)


def parse_worker_role(argv: list[str]) -> WorkerRole | None:
    """`--worker I --of N --metrics-fd FD --metrics-ports P0,P1,...` (from gateway.workers)."""
    parser = argparse.ArgumentParser(prog="flashgate-gateway")
    parser.add_argument("--worker", type=int)
    parser.add_argument("--of", type=int)
    parser.add_argument("--metrics-fd", type=int)
    parser.add_argument("--metrics-ports", default="")
    args = parser.parse_args(argv)
    if args.worker is None:
        return None
    ports = tuple(int(port) for port in args.metrics_ports.split(","))
    return WorkerRole(args.worker, args.of, args.metrics_fd, ports)


def main(argv: list[str] | None = None) -> None:
    role = parse_worker_role(sys.argv[1:] if argv is None else argv)
    configure_logging("gateway")
    settings = load_settings()
    count = resolve_count(settings.gateway.workers)
    if role is None and count > 1:
        sys.exit(run_workers(settings, count))
    uvloop.run(serve_gateway(settings, role))


if __name__ == "__main__":
    main()

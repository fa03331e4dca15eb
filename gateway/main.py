"""Run the gateway on Hypercorn: `flashgate-gateway` (settings from flashgate.toml + env)."""

from __future__ import annotations

import asyncio
import logging
import signal

import uvloop
from hypercorn.asyncio import serve
from hypercorn.config import Config

from flashgate.logs import configure_logging
from flashgate.settings import Settings, load_settings
from gateway.app import create_app

log = logging.getLogger(__name__)

GRACEFUL_TIMEOUT_S = 15.0


def hypercorn_config(settings: Settings) -> Config:
    config = Config()
    config.bind = [f"{settings.gateway.host}:{settings.gateway.port}"]
    config.accesslog = None
    config.graceful_timeout = GRACEFUL_TIMEOUT_S
    # Limits that keep a slow or hostile client from holding resources.
    config.h11_max_incomplete_size = 16 * 1024
    config.keep_alive_timeout = 30
    config.read_timeout = 30
    config.backlog = 2048
    return config


async def serve_gateway(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = create_app(settings)
    log.info("gateway listening on http://%s:%d", settings.gateway.host, settings.gateway.port)
    # On the signal Hypercorn stops accepting, lets in-flight requests finish,
    # then runs the lifespan shutdown, which flushes the producer.
    await serve(app, hypercorn_config(settings), shutdown_trigger=stop.wait)  # type: ignore[arg-type]
    log.info("gateway stopped")


def main() -> None:
    configure_logging("gateway")
    settings = load_settings()
    uvloop.run(serve_gateway(settings))


if __name__ == "__main__":
    main()

"""Run the gateway on Hypercorn: `flashgate-gateway` (settings from flashgate.toml + env).

One process serves two listeners from one event loop: the public API
(settings.gateway) and the admin API (settings.admin), with one shutdown
trigger. On SIGTERM both stop accepting, in-flight requests finish, then each
app's lifespan shutdown runs (the public one flushes the Kafka producer).

One worker per process: scale out with more gateway processes (they share
nothing but Redis and Kafka). Hypercorn's own multi-worker mode would also
start one admin listener per worker.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import uvloop
from hypercorn.asyncio import serve
from hypercorn.config import Config

from flashgate.errors import ConfigError
from flashgate.logs import configure_logging
from flashgate.settings import Settings, load_settings
from gateway.admin.app import create_admin_app
from gateway.admin.token import ensure_admin_token, token_path
from gateway.app import create_app
from gateway.soldout import SoldOutCache

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


async def serve_gateway(settings: Settings) -> None:
    if settings.gateway.workers != 1:
        raise ConfigError("gateway.workers must be 1: run more gateway processes to use more cores")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    token = ensure_admin_token(settings)
    sold_out = SoldOutCache(settings.gateway.sold_out_cache_ms / 1000)
    public = create_app(settings, sold_out=sold_out)
    admin = create_admin_app(settings, token, sold_out)
    gw, ad = settings.gateway, settings.admin
    log.info("gateway listening on http://%s:%d", gw.host, gw.port)
    log.info(
        "admin listening on http://%s:%d (token %s)",
        ad.host,
        ad.port,
        "from FLASHGATE_ADMIN_TOKEN" if settings.admin.token else f"in {token_path(settings)}",
    )
    await asyncio.gather(
        serve(public, hypercorn_config(gw.host, gw.port), shutdown_trigger=stop.wait),  # type: ignore[arg-type]
        serve(admin, hypercorn_config(ad.host, ad.port), shutdown_trigger=stop.wait),  # type: ignore[arg-type]
    )
    log.info("gateway stopped")


def main() -> None:
    configure_logging("gateway")
    settings = load_settings()
    uvloop.run(serve_gateway(settings))


if __name__ == "__main__":
    main()

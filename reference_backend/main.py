"""Command line of the reference backend: flags to BackendConfig, then serve until SIGTERM."""

from __future__ import annotations

import argparse
import logging
import ssl
from pathlib import Path

from aiohttp import web

from reference_backend.app import create_app
from reference_backend.config import (
    DEFAULT_DB_PATH,
    DEFAULT_HOST,
    DEFAULT_MAX_WAIT,
    DEFAULT_PORT,
    BackendConfig,
)

logger = logging.getLogger("reference_backend")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flashgate-backend",
        description="Reference slow order backend: stores each order once, keyed by order_id.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on")
    parser.add_argument("--db", type=Path, default=DEFAULT_DB_PATH, help="SQLite file")
    capacity = parser.add_argument_group("capacity")
    capacity.add_argument("--rate", type=float, default=0.0, help="orders/s, 0 = unlimited")
    capacity.add_argument(
        "--burst", type=float, default=None, help="token bucket size (default max(1, rate/10))"
    )
    capacity.add_argument(
        "--concurrency", type=int, default=0, help="POSTs processed at once, 0 = unlimited"
    )
    capacity.add_argument(
        "--max-wait",
        type=float,
        default=DEFAULT_MAX_WAIT,
        help="longest wait for capacity in seconds before answering 503",
    )
    faults = parser.add_argument_group("failure injection")
    faults.add_argument(
        "--error-share", type=float, default=0.0, help="share 0..1 of POSTs answered 500"
    )
    faults.add_argument("--latency-ms", type=float, default=0.0, help="latency added per POST")
    faults.add_argument(
        "--outage-start", type=float, default=0.0, help="outage begins this many s after start"
    )
    faults.add_argument(
        "--outage-seconds", type=float, default=0.0, help="outage length in s, 0 = none"
    )
    faults.add_argument("--seed", type=int, default=None, help="seed for --error-share draws")
    faults.add_argument(
        "--refuse-status", type=int, default=0,
        help="answer this status to every POST /orders for --refuse-seconds after start",
    )  # fmt: skip
    faults.add_argument("--refuse-seconds", type=float, default=0.0, help="length of the refusal")
    faults.add_argument(
        "--reject-attribute", default="",
        help="answer 422 to an order whose attributes carry this key",
    )  # fmt: skip
    auth = parser.add_argument_group("authentication and TLS")
    auth.add_argument("--require-token", default="", help="orders need Authorization: Bearer this")
    auth.add_argument(
        "--oauth2-client", default="",
        help="ID:SECRET: serve POST /oauth/token (client credentials); orders need its tokens",
    )  # fmt: skip
    auth.add_argument(
        "--require-token-file", type=Path, default=None,
        help="like --require-token, the token read from this file (kept off the command line)",
    )  # fmt: skip
    auth.add_argument(
        "--oauth2-client-file", type=Path, default=None,
        help="like --oauth2-client, ID:SECRET read from this file",
    )  # fmt: skip
    auth.add_argument("--token-ttl", type=float, default=300.0, help="life of issued tokens, s")
    auth.add_argument("--tls-cert", type=Path, default=None, help="serve HTTPS: certificate PEM")
    auth.add_argument("--tls-key", type=Path, default=None, help="serve HTTPS: key PEM")
    auth.add_argument(
        "--tls-client-ca", type=Path, default=None,
        help="mutual TLS: clients need a certificate signed by this CA",
    )  # fmt: skip
    tuning = parser.add_argument_group("tuning")
    tuning.add_argument(
        "--commit-interval-ms",
        type=float,
        default=0.0,
        help="batch SQLite commits on this interval; 0 commits every order at once",
    )
    tuning.add_argument("--access-log", action="store_true", help="log every request")
    return parser


def parse_config(argv: list[str] | None = None) -> BackendConfig:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        require_token = _from_file(args.require_token_file) or args.require_token
        oauth2_client = _from_file(args.oauth2_client_file) or args.oauth2_client
        return BackendConfig(
            host=args.host,
            port=args.port,
            db_path=args.db,
            rate=args.rate,
            burst=args.burst,
            concurrency=args.concurrency,
            max_wait=args.max_wait,
            error_share=args.error_share,
            latency_ms=args.latency_ms,
            outage_start=args.outage_start,
            outage_seconds=args.outage_seconds,
            seed=args.seed,
            commit_interval_ms=args.commit_interval_ms,
            access_log=args.access_log,
            refuse_status=args.refuse_status,
            refuse_seconds=args.refuse_seconds,
            reject_attribute=args.reject_attribute,
            require_token=require_token,
            oauth2_client=oauth2_client,
            token_ttl_s=args.token_ttl,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            tls_client_ca=args.tls_client_ca,
        )
    except ValueError as exc:
        parser.error(str(exc))


def _from_file(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from exc


def describe(config: BackendConfig) -> str:
    """The one start-up line: where it listens, its capacity and its faults."""
    scheme = "https" if config.tls_cert is not None else "http"
    auth = (
        "oauth2" if config.oauth2_client else "bearer" if config.require_token else "none"
    )  # the token and the client secret are never printed
    rate = f"{config.rate:g}/s" if config.rate > 0 else "unlimited"
    concurrency = str(config.concurrency) if config.concurrency > 0 else "unlimited"
    outage = (
        f"{config.outage_seconds:g}s after {config.outage_start:g}s"
        if config.outage_seconds > 0
        else "none"
    )
    return (
        f"reference backend starting on {scheme}://{config.host}:{config.port} "
        f"db={config.db_path} auth={auth} "
        f"capacity: rate={rate} burst={config.effective_burst:g} concurrency={concurrency} "
        f"max_wait={config.max_wait:g}s faults: error_share={config.error_share:g} "
        f"latency_ms={config.latency_ms:g} outage={outage} seed={config.seed} "
        f"refuse={config.refuse_status or 'none'} for {config.refuse_seconds:g}s "
        f"reject_attribute={config.reject_attribute or 'none'}"
    )


def server_tls(config: BackendConfig) -> ssl.SSLContext | None:
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key)
    if config.tls_client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(config.tls_client_ca)
    return context


def main(argv: list[str] | None = None) -> None:
    config = parse_config(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logger.info(describe(config))
    web.run_app(
        create_app(config),
        ssl_context=server_tls(config),
        host=config.host,
        port=config.port,
        access_log=logging.getLogger("aiohttp.access") if config.access_log else None,
        print=None,
        shutdown_timeout=5.0,
    )
    logger.info("reference backend stopped")

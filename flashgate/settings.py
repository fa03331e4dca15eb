"""The one typed settings object, read once from `flashgate.toml` and the environment.

Every key of the TOML file can be overridden by an environment variable named
`FLASHGATE_<SECTION>_<KEY>` (for example `FLASHGATE_KAFKA_BOOTSTRAP_SERVERS`).
`FLASHGATE_CONFIG` names the file; without it `./flashgate.toml` is read when
present, else the defaults below apply. Defaults are named constants with their
unit in the name. Variables Kubernetes injects for a Service named `flashgate-*`
are skipped (see service_links.py); any other unknown FLASHGATE_* name is an error.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec

from flashgate.errors import ConfigError
from flashgate.secret import Secret, decode_secret
from flashgate.service_links import is_service_link

ENV_PREFIX = "FLASHGATE_"
CONFIG_ENV = "FLASHGATE_CONFIG"
# Read before the settings exist (logging is set up first), so not a settings key.
LOG_LEVEL_ENV = "FLASHGATE_LOG_LEVEL"
DEFAULT_CONFIG_FILE = "flashgate.toml"

GATEWAY_PORT = 8080
ADMIN_PORT = 8081
BACKEND_PORT = 8090
KAFKA_PORT = 9092
KAFKA_CONTROLLER_PORT = 9093
REDIS_PORT = 6379

MAX_BODY_BYTES = 8 * 1024
PRODUCE_TIMEOUT_MS = 5_000
IN_FLIGHT_MAX = 2_000
SHED_LAG_MS = 0
SHED_RETRY_AFTER_S = 1
RETENTION_MS = 3 * 24 * 3600 * 1000
ORDER_STATUS_TTL_S = 4 * 24 * 3600
DRAIN_RATE_PER_S = 500.0
DRAIN_CONCURRENCY = 64
BACKEND_TIMEOUT_S = 10.0
KAFKA_HEAP_MB = 512
IDEMPOTENCY_TTL_S = 24 * 3600
RESERVATION_TTL_S = 30
SOLD_OUT_CACHE_MS = 1_000
ADMISSION_BATCH_MAX = 256
REAPER_INTERVAL_S = 5.0
SALE_PER_ORDER_MAX = 10
SALE_RATE_PER_S = 5_000.0
SALE_BURST = 1_000
USER_RATE_PER_S = 1.0
USER_BURST = 3
IP_RATE_PER_S = 200.0
IP_BURST = 400
BUFFER_SAFETY_S = 6 * 3600


class GatewaySettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = GATEWAY_PORT
    # Worker processes on the public port (gateway.workers); 0 = one per usable CPU.
    workers: int = 0
    max_body_bytes: int = MAX_BODY_BYTES
    produce_timeout_ms: int = PRODUCE_TIMEOUT_MS
    in_flight_max: int = IN_FLIGHT_MAX
    # Shed public requests (503, gateway.shedding) while the event loop runs later than
    # this in a standing way. 0 = off, the default: on the reference machine it made no
    # answer faster (a crowd's cost is parsing, before any decision; B8), and the proxy
    # in front is what sheds (README "Flash crowds").
    shed_lag_ms: int = SHED_LAG_MS
    # A shed request's Retry-After, spread over this to three times it.
    shed_retry_after_s: int = SHED_RETRY_AFTER_S
    # Storefront bearer tokens; empty means the public API needs none (unless shopper
    # tokens are configured).
    storefront_tokens: list[str] = msgspec.field(default_factory=list)
    # Secrets (32 bytes or more, newest first) that storefronts sign shopper tokens
    # with (HS256 JWTs: sub = user_id, sale, exp). When set, a request without a
    # storefront token needs a valid shopper token, and its order must be that
    # shopper's. Normally from FLASHGATE_GATEWAY_SHOPPER_TOKEN_SECRETS, comma-separated.
    shopper_token_secrets: list[Secret] = msgspec.field(default_factory=list)
    # Origins whose pages may call the public API from the browser (CORS); empty = none.
    cors_origins: list[str] = msgspec.field(default_factory=list)
    # How long a replayable Idempotency-Key answer is kept.
    idempotency_ttl_s: int = IDEMPOTENCY_TTL_S
    # A reservation not confirmed (Kafka ack) within this is settled by the reaper from
    # what Kafka holds: confirmed if its record is there, returned to stock if not.
    reservation_ttl_s: int = RESERVATION_TTL_S
    # Answer sold_out locally for this long once a SKU reached zero (0 = always ask Redis).
    sold_out_cache_ms: int = SOLD_OUT_CACHE_MS
    # Admit concurrent requests in one Redis call per event-loop tick (false = one call each).
    admission_batching: bool = True
    admission_batch_max: int = ADMISSION_BATCH_MAX
    # How often idle sales' expired reservations are returned to stock.
    reaper_interval_s: float = REAPER_INTERVAL_S
    # Per-IP limits use the X-Forwarded-For client (only behind a trusted proxy).
    trust_forwarded_for: bool = False
    # Refuse (503 backlog_full) an order the drain would deliver later than the topic's
    # retention minus this (see flashgate.drain.projection); a sale may ask for less.
    buffer_safety_s: int = BUFFER_SAFETY_S

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ValueError("gateway.workers must be >= 0 (0 = one per CPU)")
        if self.shed_lag_ms < 0:
            raise ValueError("gateway.shed_lag_ms must be >= 0 (0 = no shedding by lag)")
        if self.shed_retry_after_s < 1:
            raise ValueError("gateway.shed_retry_after_s must be >= 1")


class AdminSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = ADMIN_PORT
    # Normally from FLASHGATE_ADMIN_TOKEN; else generated into <state_dir>/admin-token.
    token: str = ""


class KafkaSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    bootstrap_servers: str = f"127.0.0.1:{KAFKA_PORT}"
    orders_topic: str = "orders"
    dlq_topic: str = "orders.dlq"
    partitions: int = 6
    replication_factor: int = 1
    min_insync_replicas: int = 1
    retention_ms: int = RETENTION_MS
    linger_ms: int = 2
    compression: str = "lz4"
    # Bounded so a request never waits on Kafka longer than this.
    message_timeout_ms: int = PRODUCE_TIMEOUT_MS
    # How every client connects (flashgate.kafka.security checks the combination at start).
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = ""
    sasl_username: str = ""
    sasl_password: Secret = msgspec.field(default_factory=Secret)
    # A file holding the password (a mounted Secret), read when a client is built.
    sasl_password_file: str = ""
    # PEM CA bundle that signed the brokers' certificates; "probe" = the system's store.
    ssl_ca_location: str = ""
    # Client certificate and key (PEM) for mutual TLS.
    ssl_certificate_location: str = ""
    ssl_key_location: str = ""
    # Further librdkafka properties, verbatim, for every client ([kafka.client] table).
    client: dict[str, str | int | float | bool] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        # Imported here: flashgate.kafka imports this module.
        from flashgate.kafka.security import check_kafka_settings

        check_kafka_settings(self)


REDIS_MODES = ("standalone", "cluster", "sentinel")
REDIS_WAIT_TIMEOUT_MS = 500


class RedisSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """How every flashgate process reaches Redis (see `flashgate.redis_client`).

    `url`: `redis://` or `rediss://` (TLS), with an ACL user and password when Redis
    asks for them (`rediss://user:secret@host:6380/0`). In cluster mode it names any
    seed node (and the database must be 0); in sentinel mode only its scheme, user,
    password and database count: the primary is asked of the `sentinels`.
    """

    mode: str = "standalone"
    url: str = f"redis://127.0.0.1:{REDIS_PORT}/0"
    # TLS (rediss://): the CA that signed Redis' certificate; a client certificate and
    # key when Redis asks for one (tls-auth-clients).
    ssl_ca_file: str = ""
    ssl_cert_file: str = ""
    ssl_key_file: str = ""
    # Sentinel mode: "host:port" of each sentinel, and the name of the watched primary.
    sentinels: list[str] = msgspec.field(default_factory=list)
    sentinel_master: str = ""
    # Admission is answered only once this many replicas hold it (WAIT); 0 = do not wait.
    wait_replicas: int = 0
    # A WAIT that is not satisfied within this answers 503 and gives the units back.
    wait_timeout_ms: int = REDIS_WAIT_TIMEOUT_MS
    order_status_ttl_s: int = ORDER_STATUS_TTL_S

    def __post_init__(self) -> None:
        # msgspec turns a ValueError here into a ValidationError naming the section.
        if self.mode not in REDIS_MODES:
            raise ValueError(f"redis.mode must be one of {', '.join(REDIS_MODES)}")
        scheme = self.url.partition("://")[0]
        if scheme not in ("redis", "rediss"):
            raise ValueError("redis.url must start with redis:// or rediss://")
        if self.mode == "sentinel" and not (self.sentinels and self.sentinel_master):
            raise ValueError("redis.mode = sentinel needs sentinels and sentinel_master")
        for address in self.sentinels:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"redis.sentinels: {address!r} is not host:port")
        if bool(self.ssl_cert_file) != bool(self.ssl_key_file):
            raise ValueError("redis.ssl_cert_file and redis.ssl_key_file go together")
        if self.wait_replicas < 0 or self.wait_timeout_ms <= 0:
            raise ValueError("redis.wait_replicas must be >= 0 and wait_timeout_ms > 0")

    @property
    def tls(self) -> bool:
        return self.url.startswith("rediss://")


DRAIN_MAX_IN_FLIGHT = 1_000
DRAIN_LIMITER_BATCH_MAX = 50
DRAIN_CONFIG_POLL_MS = 250
DRAIN_PROGRESS_INTERVAL_MS = 500
DRAIN_ADAPTIVE_FLOOR_PER_S = 1.0
DRAIN_ADAPTIVE_ERROR_SHARE = 0.1
DRAIN_ADAPTIVE_LATENCY_SLACK_MS = 250.0
# Longer than a rebalance can hold one poll (a revoke waits backend_timeout_s + 6 s,
# an assign up to 15 s for committed offsets), far shorter than max.poll.interval.ms
# (300 s), after which the group would drop the consumer anyway.
DRAIN_HEALTH_STUCK_AFTER_S = 60.0
DRAIN_REFUSAL_STORM_ORDERS = 20
DRAIN_REFUSAL_STORM_WINDOW_S = 60.0


class DrainSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The order drain. Rates, burst, schedule and `adaptive*` keys apply live (no restart)."""

    group_id: str = "order-drain"
    # The full endpoint every order is POSTed to. A URL without a path means the
    # reference backend's `/orders` (how it was given before it was a full endpoint).
    backend_url: str = f"http://127.0.0.1:{BACKEND_PORT}/orders"
    # https: the CA (PEM) that signed the backend's certificate ("" = the system's store);
    # a client certificate and its unencrypted key (PEM) for mutual TLS, both or neither.
    backend_ca_file: str = ""
    backend_client_cert: str = ""
    backend_client_key: str = ""
    # Extra request headers; a value "${NAME}" is read from the environment at start.
    backend_headers: dict[str, str] = msgspec.field(default_factory=dict)
    # "none", "bearer" (backend_token or backend_token_file, re-read when it changes) or
    # "oauth2" (client credentials: token cached, refreshed before it expires).
    backend_auth: Literal["none", "bearer", "oauth2"] = "none"
    backend_token: Secret = msgspec.field(default_factory=Secret)
    backend_token_file: str = ""
    backend_oauth2_token_url: str = ""
    backend_oauth2_client_id: str = ""
    backend_oauth2_client_secret: Secret = msgspec.field(default_factory=Secret)
    backend_oauth2_client_secret_file: str = ""
    backend_oauth2_scope: str = ""
    # This many different orders refused in a row with one status (400, 409, 422...)
    # within the window: hold the drain and alarm instead of dead-lettering the rest.
    refusal_storm_orders: int = DRAIN_REFUSAL_STORM_ORDERS
    refusal_storm_window_s: float = DRAIN_REFUSAL_STORM_WINDOW_S
    # The ceiling outside every schedule window (or always, without a schedule).
    rate_per_s: float = DRAIN_RATE_PER_S
    burst: int = 50
    concurrency: int = DRAIN_CONCURRENCY
    backend_timeout_s: float = BACKEND_TIMEOUT_S
    max_attempts: int = 8
    poll_batch: int = 500
    # Windows "HH:MM[:SS]-HH:MM[:SS]=<orders/s>" in `timezone`; end <= start wraps midnight.
    schedule: list[str] = msgspec.field(default_factory=list)
    timezone: str = "UTC"
    # Orders read from Kafka and not yet delivered, at most (partitions pause above it).
    max_in_flight: int = DRAIN_MAX_IN_FLIGHT
    # Largest batch of tokens one consumer takes from the shared limiter per Redis call.
    limiter_batch_max: int = DRAIN_LIMITER_BATCH_MAX
    config_poll_ms: int = DRAIN_CONFIG_POLL_MS
    progress_interval_ms: int = DRAIN_PROGRESS_INTERVAL_MS
    # Back off when the backend slows down or errs, climb back to the ceiling after.
    adaptive: bool = True
    adaptive_floor_per_s: float = DRAIN_ADAPTIVE_FLOOR_PER_S
    adaptive_error_share: float = DRAIN_ADAPTIVE_ERROR_SHARE
    adaptive_latency_slack_ms: float = DRAIN_ADAPTIVE_LATENCY_SLACK_MS
    # The consumer's probe and metrics listener (order_consumer/health_server.py); 0 = off.
    health_host: str = "127.0.0.1"
    health_port: int = 0
    # No poll of Kafka for this long and the consumer reports itself stuck (not alive).
    health_stuck_after_s: float = DRAIN_HEALTH_STUCK_AFTER_S
    # Consumer processes `flashgate-consumer` starts and supervises; 0 = one per usable
    # CPU. They share the group's one rate (its Redis limiter).
    processes: int = 1

    def __post_init__(self) -> None:
        if self.processes < 0:
            raise ValueError("drain.processes must be >= 0 (0 = one per CPU)")
        # Imported here: that module is typed against this one.
        from flashgate.drain.backend_settings import check_backend_settings

        check_backend_settings(self)

    @property
    def backend_endpoint(self) -> str:
        """`backend_url`, with `/orders` added when it has no path (the reference backend)."""
        url = urlsplit(self.backend_url)
        if url.path in ("", "/"):
            return url._replace(path="/orders").geturl()
        return self.backend_url


class BackendSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The reference slow backend that the local stack starts."""

    host: str = "127.0.0.1"
    port: int = BACKEND_PORT
    rate_per_s: float = 500.0
    concurrency: int = 64


class SalesSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Defaults for what `PUT /admin/v1/sales/{sale_id}` leaves out.

    A rate of 0 switches that limiter off; `per_user_max` 0 means no per-user limit.
    """

    per_order_max: int = SALE_PER_ORDER_MAX
    per_user_max: int = 0
    sale_rate_per_s: float = SALE_RATE_PER_S
    sale_burst: int = SALE_BURST
    user_rate_per_s: float = USER_RATE_PER_S
    user_burst: int = USER_BURST
    ip_rate_per_s: float = IP_RATE_PER_S
    ip_burst: int = IP_BURST


class StackSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    state_dir: str = ".flashgate"
    kafka_controller_port: int = KAFKA_CONTROLLER_PORT
    kafka_heap_mb: int = KAFKA_HEAP_MB
    # Kafka's jars, fetched by Maven (gitignored; ~/.m2 makes a refetch a copy).
    kafka_libs_dir: str = ".cache/kafka-4.3.1"
    # The local broker's client listener (FLASHGATE_STACK_KAFKA_SECURITY): "sasl_ssl" is
    # SCRAM-SHA-512 over TLS, "mtls" is TLS with client certificates; see flashgate.stack.
    kafka_security: Literal["plaintext", "sasl_ssl", "mtls"] = "plaintext"
    # The reference backend's mode (FLASHGATE_STACK_BACKEND_MODE), and the drain's matching
    # connection settings: see flashgate.stack.local_backend.
    backend_mode: Literal[
        "plain", "bearer", "oauth2", "tls", "refuse-401", "refuse-403", "refuse-404", "reject"
    ] = "plain"


class Settings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    gateway: GatewaySettings = msgspec.field(default_factory=GatewaySettings)
    admin: AdminSettings = msgspec.field(default_factory=AdminSettings)
    kafka: KafkaSettings = msgspec.field(default_factory=KafkaSettings)
    redis: RedisSettings = msgspec.field(default_factory=RedisSettings)
    drain: DrainSettings = msgspec.field(default_factory=DrainSettings)
    backend: BackendSettings = msgspec.field(default_factory=BackendSettings)
    stack: StackSettings = msgspec.field(default_factory=StackSettings)
    sales: SalesSettings = msgspec.field(default_factory=SalesSettings)

    @property
    def state_dir(self) -> Path:
        return Path(self.stack.state_dir)

    @property
    def settled_keep_ms(self) -> int:
        """How long reaped and adopted order ids are remembered in Redis: a late record
        can turn up as long as Kafka keeps it (the drain's fence), and a retry can come
        as long as its Idempotency-Key lives (an adopted order is answered "accepted")."""
        return max(self.kafka.retention_ms, self.gateway.idempotency_ttl_s * 1000)


SECTIONS: dict[str, type[msgspec.Struct]] = {
    "gateway": GatewaySettings,
    "admin": AdminSettings,
    "kafka": KafkaSettings,
    "redis": RedisSettings,
    "drain": DrainSettings,
    "backend": BackendSettings,
    "stack": StackSettings,
    "sales": SalesSettings,
}


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    overrides: dict[str, dict[str, Any]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name in (CONFIG_ENV, LOG_LEVEL_ENV):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section, _, key = rest.partition("_")
        struct = SECTIONS.get(section)
        if struct is None or key not in struct.__struct_fields__:
            if is_service_link(name, environ):
                continue
            raise ConfigError(f"unknown setting in environment: {name}")
        overrides.setdefault(section, {})[key] = _env_value(struct, key, value)
    return overrides


def _env_value(struct: type[msgspec.Struct], key: str, value: str) -> Any:
    # Lists come from the environment comma-separated; scalars are cast by msgspec.
    annotation = struct.__annotations__.get(key, "")
    if "list" in str(annotation):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def load_settings(
    path: Path | str | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read the TOML file (if any) and the environment into one `Settings`."""
    env = os.environ if environ is None else environ
    data: dict[str, dict[str, Any]] = {}
    config_path = Path(path) if path is not None else _default_path(env)
    if config_path is not None:
        try:
            data = tomllib.loads(config_path.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"settings file not found: {config_path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_path}: invalid TOML: {exc}") from exc
    for section, values in _env_overrides(env).items():
        data.setdefault(section, {}).update(values)
    try:
        return msgspec.convert(data, Settings, strict=False, dec_hook=decode_secret)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid settings: {exc}") from exc


def _default_path(env: Mapping[str, str]) -> Path | None:
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    local = Path(DEFAULT_CONFIG_FILE)
    return local if local.is_file() else None

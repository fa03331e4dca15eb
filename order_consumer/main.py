"""Run one drain process: `flashgate-consumer` (settings from flashgate.toml + env).

Builds the clients (Redis, Kafka consumer and DLQ producer, backend HTTP
session) and, with `[drain] health_port`, the probe listener (health_server.py),
hands them to the worker, and closes them when it returns. SIGTERM
or SIGINT stop the worker: requests on the wire finish, offsets are committed; one
that comes during start-up is kept until the worker exists (stop_signals.py).
With `[drain] processes` other than 1 this process supervises that many
(`order_consumer.processes`) instead.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys

import uvloop

from flashgate.cpus import resolve_count
from flashgate.drain.control import DrainControl
from flashgate.drain.losses import LossBook
from flashgate.kafka.config import admin_config, consumer_config, producer_config, reader_config
from flashgate.kafka.producer import KafkaProducer
from flashgate.logs import configure_logging
from flashgate.redis_client import create_redis
from flashgate.redis_scripts.loader import RedisScripts
from flashgate.settings import Settings, load_settings
from order_consumer.backend_client import BackendClient, connection_for, shown_url
from order_consumer.config_watch import ConfigWatch, settings_path
from order_consumer.fence import RecordFence
from order_consumer.group_limiter import SCRIPT, GroupLimiter
from order_consumer.head_times import HeadTimes
from order_consumer.health import ConsumerHealth, WatchedSource
from order_consumer.health_server import HealthServer
from order_consumer.kafka_source import EndOffsets, KafkaSource, RebalanceHandler
from order_consumer.loss_watch import LogStarts, LossWatch
from order_consumer.processes import run_processes
from order_consumer.status_writer import StatusWriter
from order_consumer.stop_signals import StopSignals
from order_consumer.worker import DrainWorker, Parts

log = logging.getLogger(__name__)

DLQ_FLUSH_S = 10.0


async def run_consumer(settings: Settings, signals: StopSignals | None = None) -> None:
    """Drain until stopped; `signals` caught since start-up are handed to the worker."""
    if signals is None:
        signals = StopSignals()
        signals.install()
    consumer_id = f"{socket.gethostname()}-{os.getpid()}"
    log.info("starting %s", consumer_id)
    drain = settings.drain
    redis = create_redis(settings.redis)
    dlq = KafkaProducer(producer_config(settings.kafka, f"drain-{os.getpid()}-dlq"))
    watch = ConfigWatch(
        settings, DrainControl(redis, drain.group_id), path=settings_path(), load=load_settings
    )

    topic = settings.kafka.orders_topic
    head_times = HeadTimes(
        reader_config(settings.kafka, f"drain-{os.getpid()}-head", f"{drain.group_id}-head"), topic
    )
    losses = LossWatch(
        LossBook(redis, drain.group_id, settings.redis.order_status_ttl_s),
        LogStarts(admin_config(settings.kafka), topic),
        topic,
    )

    health = ConsumerHealth(stuck_after_s=drain.health_stuck_after_s)
    health_server = (
        HealthServer(health, host=drain.health_host, port=drain.health_port)
        if drain.health_port
        else None
    )

    def source_factory(handler: RebalanceHandler) -> KafkaSource:
        return WatchedSource(
            consumer_config(settings.kafka, drain, f"drain-{os.getpid()}"),
            settings.kafka.orders_topic,
            handler,
            revoke_timeout_s=drain.backend_timeout_s + 1,
            health=health,
        )

    try:
        if health_server is not None:
            await health_server.start()
        statuses = StatusWriter(redis, settings.redis.order_status_ttl_s)
        async with BackendClient(
            connection_for(drain), drain.concurrency, drain.backend_timeout_s
        ) as backend:
            worker = DrainWorker(
                settings,
                Parts(
                    source_factory=source_factory,
                    end_offsets=EndOffsets(
                        admin_config(settings.kafka), settings.kafka.orders_topic
                    ),
                    backend=backend,
                    limiter=GroupLimiter(
                        RedisScripts(redis, [SCRIPT]),
                        drain.group_id,
                        batch_max=drain.limiter_batch_max,
                    ),
                    dlq=dlq,
                    statuses=statuses,
                    fence=RecordFence(redis, settled_keep_ms=settings.settled_keep_ms),
                    watch=watch,
                    redis=redis,
                    consumer_id=consumer_id,
                    head_times=head_times,
                    losses=losses,
                ),
            )
            if health_server is not None:
                health_server.count(worker.counters, statuses)
            loop = asyncio.get_running_loop()
            signals.hand_to(loop, worker.stop)
            log.info(
                "draining %s to %s as %s in group %s",
                settings.kafka.orders_topic, shown_url(drain.backend_endpoint), consumer_id,
                drain.group_id,
            )  # fmt: skip
            try:
                await worker.run()
            finally:
                log.info(
                    "stopped: delivered %d, dead-lettered %d (fenced %d)",
                    worker.counters.delivered, worker.counters.dead_lettered,
                    worker.counters.fenced,
                )  # fmt: skip
    finally:
        if health_server is not None:
            await health_server.close()
        await asyncio.to_thread(head_times.close)
        remaining = await asyncio.to_thread(dlq.close, DLQ_FLUSH_S)
        if remaining:
            log.error("%d dead letters still unacknowledged at exit", remaining)
        await redis.aclose()


def main(argv: list[str] | None = None) -> None:
    signals = StopSignals()
    signals.install()  # first: a stop during start-up is kept, not the default death
    parser = argparse.ArgumentParser(prog="flashgate-consumer")
    parser.add_argument("--process", type=int, help="one of [drain] processes (internal)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    configure_logging("consumer")
    settings = load_settings()
    count = resolve_count(settings.drain.processes)
    if args.process is None and count > 1:
        if signals.requested:  # stopped before it started anything
            sys.exit(0)
        # The supervisor installs its own handlers; it stops its consumers on a signal.
        sys.exit(run_processes(settings, count))
    uvloop.run(run_consumer(settings, signals))


if __name__ == "__main__":
    main()

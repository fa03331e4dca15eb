"""Run one drain process: `flashgate-consumer` (settings from flashgate.toml + env)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import uvloop

from flashgate.kafka.config import consumer_config, producer_config
from flashgate.kafka.producer import AsyncProducer
from flashgate.logs import configure_logging
from flashgate.order_status import OrderStatusStore
from flashgate.redis_client import create_redis
from flashgate.settings import Settings, load_settings
from order_consumer.backend_client import BackendClient
from order_consumer.kafka_source import KafkaSource
from order_consumer.local_limiter import TokenBucket
from order_consumer.worker import DrainWorker

log = logging.getLogger(__name__)


async def run_consumer(settings: Settings) -> None:
    client_id = f"drain-{os.getpid()}"
    drain = settings.drain
    source = KafkaSource(
        consumer_config(settings.kafka, drain, client_id), settings.kafka.orders_topic
    )
    dlq = AsyncProducer(producer_config(settings.kafka, client_id + "-dlq"))
    redis = create_redis(settings.redis)
    limiter = TokenBucket(drain.rate_per_s, max(1, drain.burst))
    async with BackendClient(drain.backend_url, drain.concurrency, drain.backend_timeout_s) as be:
        worker = DrainWorker(
            settings,
            source,
            be,
            limiter,
            dlq,
            OrderStatusStore(redis, settings.redis.order_status_ttl_s),
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        log.info(
            "draining %s to %s at %.0f/s",
            settings.kafka.orders_topic,
            drain.backend_url,
            drain.rate_per_s,
        )
        try:
            await worker.run()
        finally:
            await source.close()
            await asyncio.to_thread(dlq.close, 10.0)
            await redis.aclose()
            log.info(
                "stopped: delivered %d, dead-lettered %d",
                worker.counters.delivered,
                worker.counters.dead_lettered,
            )


def main() -> None:
    configure_logging("consumer")
    uvloop.run(run_consumer(load_settings()))


if __name__ == "__main__":
    main()

"""What the gateway's handlers share: clients created in the lifespan, never globals."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from flashgate.kafka.producer import AsyncProducer
from flashgate.order_status import OrderStatusStore
from flashgate.settings import Settings


@dataclass(frozen=True, slots=True)
class GatewayContext:
    settings: Settings
    producer: AsyncProducer
    redis: Redis
    statuses: OrderStatusStore

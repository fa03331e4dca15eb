"""What the gateway's handlers share: clients created in the lifespan, never globals."""

from __future__ import annotations

from dataclasses import dataclass

from flashgate.admission.admitter import Admitter
from flashgate.admission.idempotency import IdempotencyStore
from flashgate.kafka.producer import KafkaProducer
from flashgate.order_status import OrderStatusStore
from flashgate.redis_client import RedisClient
from flashgate.settings import Settings
from gateway.backlog_guard import BacklogGuard
from gateway.metrics import GatewayMetrics
from gateway.settle import Settler
from gateway.soldout import SoldOutCache


@dataclass(frozen=True, slots=True)
class GatewayContext:
    settings: Settings
    producer: KafkaProducer
    redis: RedisClient
    statuses: OrderStatusStore
    admitter: Admitter
    idempotency: IdempotencyStore
    settler: Settler
    sold_out: SoldOutCache
    metrics: GatewayMetrics
    guard: BacklogGuard

"""The consumer's health listener: alive while the drain loop polls, ready once in the group.

The rules run on an injected clock; the listener and its wiring run as real
consumer processes on the real Kafka broker and Redis of the session.
"""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import pytest

from flashgate.stack.ports import free_port, wait_for_port
from order_consumer.health import ConsumerHealth
from order_consumer.health_server import HealthServer
from order_consumer.worker import DrainCounters
from tests.services import START_TIMEOUT_S, ServiceEnv, Services, wait_until

PARTITIONS = 6


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_alive_while_polling_stuck_without() -> None:
    clock = FakeClock()
    health = ConsumerHealth(stuck_after_s=30, clock=clock)
    assert health.alive().ok  # judged from start-up until the first poll
    clock.now += 29
    health.polled()
    clock.now += 30
    assert health.alive().ok
    clock.now += 1
    verdict = health.alive()
    assert not verdict.ok and "no poll of Kafka for 31 s" in verdict.reason
    assert not health.ready().ok
    health.polled()
    assert health.alive().ok


def test_ready_once_in_the_group_until_lost() -> None:
    health = ConsumerHealth(stuck_after_s=30, clock=FakeClock())
    assert not health.ready().ok
    health.assigned([])  # more consumers than partitions: a member with none
    assert health.ready().ok and health.ready().assigned == 0
    health.assigned([0, 1, 2])
    health.revoked([2])  # handed over in a rebalance: still a member
    assert health.ready().ok and health.ready().assigned == 2
    health.lost([0, 1])
    assert not health.ready().ok
    assert health.alive().ok  # the loop polls on, and will rejoin
    health.assigned([4])
    assert health.ready().ok


@dataclass(frozen=True)
class Dropped:
    dropped: int


def test_listener_answers_probes_and_refuses_the_rest() -> None:
    clock = FakeClock()
    health = ConsumerHealth(stuck_after_s=30, clock=clock)
    port = free_port()

    async def scenario() -> list[tuple[int, bytes]]:
        server = HealthServer(health, host="127.0.0.1", port=port)
        server.count(DrainCounters(delivered=7, dead_lettered=2, fenced=1), Dropped(3))
        await server.start()
        try:
            answers = [await _raw(port, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")]
            health.assigned([0])
            answers.append(await _raw(port, b"GET /readyz?x=1 HTTP/1.1\r\n\r\n"))
            clock.now += 31
            answers.append(await _raw(port, b"GET /healthz HTTP/1.1\r\n\r\n"))
            answers.append(await _raw(port, b"POST /healthz HTTP/1.1\r\n\r\n"))
            answers.append(await _raw(port, b"GET /nope HTTP/1.1\r\n\r\n"))
            answers.append(await _raw(port, b"GET /metrics HTTP/1.1\r\n\r\n"))
            # A request head over the cap gets the connection closed, nothing else.
            answers.append(await _raw(port, b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 20_000))
            return answers
        finally:
            await server.close()

    answers = asyncio.run(scenario())
    assert [status for status, _ in answers] == [503, 200, 503, 405, 404, 200, 0]
    assert b"flashgate_consumer_poll_age_seconds 31.0" in answers[5][1]
    assert b"flashgate_consumer_assigned_partitions 1.0" in answers[5][1]
    assert b"flashgate_drain_delivered_total 7.0" in answers[5][1]
    assert b"flashgate_drain_fenced_total 1.0" in answers[5][1]
    assert b"flashgate_drain_status_writes_dropped_total 3.0" in answers[5][1]


async def _raw(port: int, request: bytes) -> tuple[int, bytes]:
    """Send one raw request; (status, body), or (0, b"") when the server just closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
    if not response:
        return 0, b""
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _health_env(**extra: str) -> tuple[int, dict[str, str]]:
    port = free_port()
    return port, {"FLASHGATE_DRAIN_HEALTH_PORT": str(port), **extra}


@pytest.mark.e2e
def test_consumers_are_ready_once_they_share_the_partitions(
    service_env: ServiceEnv, services: Services
) -> None:
    ports = []
    for _ in range(2):
        port, env = _health_env()
        services.start_consumer(**env)
        wait_for_port("consumer health", "127.0.0.1", port, START_TIMEOUT_S)
        ports.append(port)

    def both_ready_with_every_partition() -> bool:
        answers = [_get(port, "/readyz") for port in ports]
        return all(status == 200 for status, _ in answers) and (
            sum(body["assigned_partitions"] for _, body in answers) == PARTITIONS
        )

    assert wait_until(both_ready_with_every_partition, timeout_s=60), [
        _get(port, "/readyz") for port in ports
    ]
    for port in ports:
        assert _get(port, "/healthz")[0] == 200


@pytest.mark.e2e
def test_a_consumer_outside_its_group_is_alive_but_not_ready(
    service_env: ServiceEnv, services: Services
) -> None:
    # No broker listens there: the loop polls on, but never joins a group.
    port, env = _health_env(FLASHGATE_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}")
    consumer = services.start_consumer(**env)
    wait_for_port("consumer health", "127.0.0.1", port, START_TIMEOUT_S)

    def polling() -> bool:
        return _get(port, "/healthz")[0] == 200 and _get(port, "/readyz")[1]["poll_age_s"] < 5

    assert wait_until(polling, timeout_s=20)
    status, body = _get(port, "/readyz")
    assert status == 503 and body["reason"] == "not a member of the consumer group yet", body

    # A drain loop that makes no progress at all (here: the process frozen) is not
    # alive from the outside either: the probe gets no answer.
    consumer.send(signal.SIGSTOP)
    try:
        with pytest.raises((TimeoutError, urllib.error.URLError)):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
    finally:
        consumer.send(signal.SIGCONT)

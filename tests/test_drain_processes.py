"""`[drain] processes = 2` on a real Kafka and Redis: `flashgate-consumer` starts two
consumers of the one group, both join it, every order is delivered once, and a
SIGKILLed one is replaced by its supervisor."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from tests.gateway_client import OPEN_RATES, Answer, Client
from tests.services import Services, admin_json, http_json, load_sale, wait_until

ORDERS = 200


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _record(services: Services) -> dict[str, Any]:
    state = Path(services.env.variables["FLASHGATE_STACK_STATE_DIR"])
    try:
        return dict(json.loads((state / "run" / "drain-processes.json").read_text()))
    except (OSError, ValueError):
        return {}


def _live(services: Services) -> dict[str, int]:
    return {
        name: child["pid"]
        for name, child in _record(services).items()
        if child["pid"] is not None and _alive(child["pid"])
    }


def test_two_drain_processes_share_the_group_and_one_replaces_a_killed_one(
    services: Services,
) -> None:
    env = services.env
    services.start_backend()
    services.start_gateway()
    consumer = services.start_consumer(FLASHGATE_DRAIN_PROCESSES="2")
    assert wait_until(lambda: len(_live(services)) == 2, 30), _record(services)
    assert wait_until(lambda: admin_json(env, "GET", "/admin/v1/drain")["consumers"] == 2, 60)

    sale_id = f"sale-{uuid.uuid4().hex[:8]}"
    load_sale(env, sale_id, {"rates": OPEN_RATES, "stock": {"A": 10_000}})

    async def orders() -> list[Answer]:
        async with Client(env.gateway_url, connections=50) as client:
            return await asyncio.gather(
                *(client.order(sale_id=sale_id, user_id=f"u{i}") for i in range(ORDERS))
            )

    assert Counter(a.status for a in asyncio.run(orders())) == {202: ORDERS}
    stats = f"{env.backend_url}/stats"
    assert wait_until(lambda: http_json("GET", stats)["orders"] == ORDERS, 60)

    victim = _live(services)["drain-process-1"]
    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:
        child = _record(services).get("drain-process-1", {})
        return bool(child.get("restarts") == 1 and _alive(child["pid"]))

    assert wait_until(replaced, 30), _record(services)
    assert consumer.running()
    # The group drains on with the replacement: more orders are all delivered once.
    assert Counter(a.status for a in asyncio.run(orders())) == {202: ORDERS}
    assert wait_until(lambda: http_json("GET", stats)["orders"] == 2 * ORDERS, 90)

    consumer.send(signal.SIGTERM)
    assert consumer.wait(60) == 0
    assert not _live(services)

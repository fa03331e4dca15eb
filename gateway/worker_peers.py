"""What the workers of one gateway tell each other over their private loopback
listeners: their metrics, for one `/metrics`, and a reloaded sale, for their
sold-out memories.

One `/metrics` for a gateway of several workers is a collector over the workers.

Each worker keeps its metrics in its own registry (the per-request counters are
plain ints, no shared memory, no lock) and serves them on a private loopback
listener its supervisor opened for it. The worker that a scrape reaches asks the
others over those listeners and answers the totals: counters and histograms
summed, `in_flight` summed, `ready` the lowest (the gateway is ready when every
worker is), the loop lag the highest and the admitted fraction the lowest (the
worst worker), the `flashgate_drain_*` gauges its own (every worker reads the same
Redis hash), plus `flashgate_gateway_worker_up{worker}` saying which answered and
`flashgate_gateway_worker_requests_total{worker}` how the kernel spread the load.

Why not prometheus-client's multiprocess mode: it needs its Counter (a lock and
an mmap write per increment, several per order) and drops custom collectors;
the price of this way is that a worker's counts leave with the worker (the
totals fall back once, which `rate()` reads as one counter reset).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from urllib.parse import parse_qs

import aiohttp
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Receive, Scope, Send

from gateway.soldout import SoldOutCache

log = logging.getLogger(__name__)

PEER_TIMEOUT_S = 2.0
OWN_ONLY_PREFIX = "flashgate_drain_"
LOWEST = ("flashgate_gateway_ready", "flashgate_gateway_admitted_fraction")
HIGHEST = ("flashgate_gateway_loop_lag_seconds",)
WORKER_UP = "flashgate_gateway_worker_up"
FORGET_PATH = "/sold-out/forget"
REQUESTS = "flashgate_gateway_requests"
WORKER_REQUESTS = "flashgate_gateway_worker_requests"

SampleKey = tuple[str, tuple[tuple[str, str], ...]]


class _Family:
    def __init__(self, name: str, documentation: str, kind: str) -> None:
        self.name = name
        self.documentation = documentation
        self.kind = kind
        self.samples: dict[SampleKey, float] = {}


def merge_worker_metrics(texts: Mapping[int, str | None], own: int) -> bytes:
    """The exposition of a gateway from each worker's own (None: did not answer)."""
    families: dict[str, _Family] = {}
    for worker, text in sorted(texts.items()):
        if text is None:
            continue
        for parsed in text_string_to_metric_families(text):
            if parsed.name.startswith(OWN_ONLY_PREFIX) and worker != own:
                continue
            family = families.setdefault(
                parsed.name, _Family(parsed.name, parsed.documentation, parsed.type)
            )
            for sample in parsed.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                seen = family.samples.get(key)
                if seen is None:
                    family.samples[key] = sample.value
                elif parsed.name in LOWEST or sample.name.endswith("_created"):
                    family.samples[key] = min(seen, sample.value)
                elif parsed.name in HIGHEST:
                    family.samples[key] = max(seen, sample.value)
                else:
                    family.samples[key] = seen + sample.value
    up = _Family(WORKER_UP, "1 for each gateway worker that answered this scrape", "gauge")
    for worker, text in sorted(texts.items()):
        up.samples[(WORKER_UP, (("worker", str(worker)),))] = 0.0 if text is None else 1.0
    families[WORKER_UP] = up
    families[WORKER_REQUESTS] = _answers_by_worker(texts)
    registry = CollectorRegistry()
    registry.register(_Merged(list(families.values())))
    return generate_latest(registry)


def _answers_by_worker(texts: Mapping[int, str | None]) -> _Family:
    """How the kernel spread the load: HTTP answers per worker (of those answering)."""
    family = _Family(WORKER_REQUESTS, "HTTP answers by gateway worker", "counter")
    for worker, text in sorted(texts.items()):
        if text is None:
            continue
        total = sum(
            sample.value
            for parsed in text_string_to_metric_families(text)
            if parsed.name == REQUESTS
            for sample in parsed.samples
            if sample.name == REQUESTS + "_total"
        )
        family.samples[(WORKER_REQUESTS + "_total", (("worker", str(worker)),))] = total
    return family


class _Merged:
    def __init__(self, families: Sequence[_Family]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        for family in self._families:
            metric = Metric(family.name, family.documentation, family.kind)
            for (name, labels), value in family.samples.items():
                metric.add_sample(name, dict(labels), value)
            yield metric


async def fetch_peer(session: aiohttp.ClientSession, port: int) -> str | None:
    """A worker's own metrics, or None while it is down or restarting."""
    try:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as answer:
            if answer.status != 200:
                return None
            return await answer.text()
    except (aiohttp.ClientError, TimeoutError):
        return None


class PeerMetrics:
    """The other workers' private listeners: asked at each scrape, and told of reloads."""

    def __init__(self, index: int, ports: Sequence[int]) -> None:
        self.index = index
        self.ports = list(ports)

    async def gather(self, own: str) -> bytes:
        timeout = aiohttp.ClientTimeout(total=PEER_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            others = await asyncio.gather(
                *(fetch_peer(session, port) for i, port in enumerate(self.ports) if i != self.index)
            )
        answers = iter(others)
        texts = {i: (own if i == self.index else next(answers)) for i in range(len(self.ports))}
        return merge_worker_metrics(texts, self.index)

    async def forget_sold_out(self, sale_id: str) -> None:
        """A sale was reloaded: the others ask Redis again (one that is down starts
        with an empty memory anyway)."""
        timeout = aiohttp.ClientTimeout(total=PEER_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await asyncio.gather(
                *(
                    _forget(session, port, sale_id)
                    for i, port in enumerate(self.ports)
                    if i != self.index
                )
            )


async def _forget(session: aiohttp.ClientSession, port: int, sale_id: str) -> None:
    url = f"http://127.0.0.1:{port}{FORGET_PATH}"
    try:
        async with session.post(url, params={"sale": sale_id}) as answer:
            await answer.read()
    except (aiohttp.ClientError, TimeoutError):
        log.warning("worker on port %d not told that sale %s was reloaded", port, sale_id)


class PrivateApp:
    """The private listener's ASGI app, for the other workers: `GET /metrics` (this
    worker's alone; 503 until its lifespan has built its clients, when `render`
    answers None) and `POST /sold-out/forget?sale=ID`."""

    def __init__(
        self, render: Callable[[], Awaitable[bytes | None]], sold_out: SoldOutCache
    ) -> None:
        self._render = render
        self._sold_out = sold_out

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["path"] == FORGET_PATH and scope["method"] == "POST":
            sale = parse_qs(scope["query_string"].decode()).get("sale", [""])[0]
            self._sold_out.forget(sale)
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        body = await self._render()
        await send(
            {
                "type": "http.response.start",
                "status": 503 if body is None else 200,
                "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode())],
            }
        )
        await send({"type": "http.response.body", "body": body or b""})

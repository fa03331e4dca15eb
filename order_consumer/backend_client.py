"""POST one order to the backend with `Idempotency-Key: <order_id>` and classify the answer.

2xx (including the backend's "duplicate" answer) is delivered; 408, 429, 5xx,
timeouts and connection errors are transient; any other 4xx is permanent.
"""

from __future__ import annotations

import aiohttp

from order_consumer.errors import BackendUnavailable, OrderRejected

TRANSIENT_STATUSES = frozenset({408, 425, 429})


class BackendClient:
    """Kept-alive connections to the backend, at most `concurrency` at a time."""

    def __init__(self, base_url: str, concurrency: int, timeout_s: float) -> None:
        self._url = base_url.rstrip("/") + "/orders"
        self._concurrency = concurrency
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> BackendClient:
        connector = aiohttp.TCPConnector(limit=self._concurrency, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def deliver(self, order_id: str, body: bytes) -> None:
        """Return when the backend has the order; raise a `DeliveryError` otherwise."""
        if self._session is None:
            raise RuntimeError("BackendClient used outside `async with`")
        headers = {"Idempotency-Key": order_id, "Content-Type": "application/json"}
        try:
            async with self._session.post(self._url, data=body, headers=headers) as response:
                if 200 <= response.status < 300:
                    await response.read()
                    return
                text = (await response.text(errors="replace"))[:200]
                if response.status in TRANSIENT_STATUSES or response.status >= 500:
                    raise BackendUnavailable(
                        f"backend answered {response.status}: {text}",
                        _retry_after(response.headers.get("Retry-After")),
                        response.status,
                    )
                raise OrderRejected(response.status, text)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise BackendUnavailable(f"backend unreachable: {exc!r}") from exc


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None

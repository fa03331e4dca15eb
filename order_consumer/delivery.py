"""Deliver one order with retries: exponential backoff with jitter, honouring Retry-After.

Only transient failures are retried; a permanent rejection propagates at once
so the order can be dead-lettered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.wait import wait_base

from order_consumer.errors import BackendUnavailable

MAX_BACKOFF_S = 10.0


class WaitRetryAfter(wait_base):
    """Wait what the backend asked for (Retry-After), or the fallback's backoff if longer."""

    def __init__(self, fallback: wait_base, ceiling_s: float = 60.0) -> None:
        self._fallback = fallback
        self._ceiling_s = ceiling_s

    def __call__(self, retry_state: RetryCallState) -> float:
        backoff = float(self._fallback(retry_state))
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, BackendUnavailable) and exc.retry_after_s is not None:
            return min(self._ceiling_s, max(backoff, exc.retry_after_s))
        return backoff


def default_wait() -> wait_base:
    return WaitRetryAfter(wait_exponential_jitter(initial=0.1, max=MAX_BACKOFF_S, jitter=0.2))


async def deliver_with_retries(
    attempt: Callable[[], Awaitable[None]],
    *,
    max_attempts: int,
    wait: wait_base | None = None,
) -> None:
    """Call `attempt` until it succeeds; re-raise the last error after `max_attempts`."""
    retrying = AsyncRetrying(
        retry=retry_if_exception_type(BackendUnavailable),
        stop=stop_after_attempt(max_attempts),
        wait=wait if wait is not None else default_wait(),
        reraise=True,
    )
    async for try_ in retrying:
        with try_:
            await attempt()

"""Failures of a delivery to the backend, as the drain loop handles them."""

from __future__ import annotations

from flashgate.errors import FlashgateError

# 5xx answers that say "the backend (or a proxy before it) is down", not "this order fails".
UNAVAILABLE_5XX = frozenset({502, 503, 504})


class DeliveryError(FlashgateError):
    """The backend did not take an order."""


class BackendUnavailable(DeliveryError):
    """Transient: timeout, connection error, 408, 425, 429 or 5xx. Retry later.

    `status` is the HTTP status when the backend answered, None when it did not.
    """

    def __init__(
        self, reason: str, retry_after_s: float | None = None, status: int | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s
        self.status = status

    @property
    def overloaded(self) -> bool:
        """429 or 503: the backend asks us to slow down."""
        return self.status in (429, 503)

    @property
    def against_order(self) -> bool:
        """A 5xx that may be this order's fault (500, 501, 505...): counts toward the DLQ."""
        return self.status is not None and self.status >= 500 and self.status not in UNAVAILABLE_5XX


class BackendRefuses(BackendUnavailable):
    """The backend refuses every order, not this one: credentials, route or protocol
    (401, 403, 404, 405, 407, 410, 415, 426), or a storm of one status (`refusals.py`).

    Handled like an outage (the gate pauses the drain and probes) and never
    dead-lettered; `message` is the start of the backend's answer, for ops.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"backend refuses every order: {status} {message}", None, status)
        self.refusal_status = status
        self.message = message


class OrderRejected(DeliveryError):
    """Permanent: the backend refused this order (400, 409, 422, another 4xx). Dead-letter it."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"backend answered {status}: {reason}")
        self.status = status
        self.reason = reason

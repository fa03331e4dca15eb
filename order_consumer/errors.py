"""Failures of a delivery to the backend, as the drain loop handles them."""

from __future__ import annotations

from flashgate.errors import FlashgateError


class DeliveryError(FlashgateError):
    """The backend did not take an order."""


class BackendUnavailable(DeliveryError):
    """Transient: timeout, connection error, 408, 429 or 5xx. Retry later."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


class OrderRejected(DeliveryError):
    """Permanent: the backend refused this order (another 4xx). Dead-letter it."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"backend answered {status}: {reason}")
        self.status = status
        self.reason = reason

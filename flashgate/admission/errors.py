"""Admission errors: Redis failures wrapped at the boundary, and invalid sale definitions."""

from __future__ import annotations

from flashgate.errors import FlashgateError


class AdmissionUnavailable(FlashgateError):
    """Redis did not answer an admission step; the caller answers 503."""


class InvalidSale(FlashgateError, ValueError):
    """A sale definition that cannot be loaded (for example a burst of 0)."""

"""Admission errors: Redis failures wrapped at the boundary."""

from __future__ import annotations

from flashgate.errors import FlashgateError


class AdmissionUnavailable(FlashgateError):
    """Redis did not answer an admission step; the caller answers 503."""

"""The headers of a 429: `Retry-After` and the IETF `RateLimit-Policy` / `RateLimit` fields.

Following draft-ietf-httpapi-ratelimit-headers (structured fields): a GCRA limit
of `burst` requests refilled at `rate` per second is described as the policy
`"<name>";q=<burst>;w=<seconds to refill the burst>`, and the refused request's
state as `"<name>";r=0;t=<seconds until one more request is allowed>`.
"""

from __future__ import annotations

import math


def retry_after_s(retry_after_ms: int) -> int:
    return max(1, math.ceil(retry_after_ms / 1000))


def rate_limit_headers(
    limiter: str, retry_after_ms: int, burst: int, rate_per_s: float
) -> dict[str, str]:
    window_s = max(1, math.ceil(burst / rate_per_s)) if rate_per_s > 0 else 1
    wait_s = retry_after_s(retry_after_ms)
    return {
        "Retry-After": str(wait_s),
        "RateLimit-Policy": f'"{limiter}";q={burst};w={window_s}',
        "RateLimit": f'"{limiter}";r=0;t={wait_s}',
    }

"""Order ids: ULIDs (time-ordered, 26 Crockford base-32 characters, 80 random bits).

Time-ordered ids sort the way orders arrived, which makes logs and the backend's
table easy to read; the random part keeps them unguessable and collision-free
across gateway replicas without coordination.
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_order_id(now_ms: int | None = None) -> str:
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def is_order_id(text: str) -> bool:
    return len(text) == 26 and all(c in _ALPHABET for c in text)

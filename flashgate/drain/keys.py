"""Redis keys of one consumer group's drain. One hash tag per group, so every key a
Lua step touches lands in one Redis Cluster slot."""

from __future__ import annotations


def _tag(group_id: str) -> str:
    return f"{{drain:{group_id}}}"


def override_key(group_id: str) -> str:
    """Hash: `rate` (absent = follow the config file), `paused` ("0"/"1"), `updated_at`."""
    return f"{_tag(group_id)}:override"


def progress_key(group_id: str) -> str:
    """Hash written by consumers: see `flashgate.drain.progress`."""
    return f"{_tag(group_id)}:progress"


def limiter_key(group_id: str) -> str:
    """The group-wide drain limiter's state."""
    return f"{_tag(group_id)}:limiter"


def lost_key(group_id: str) -> str:
    """Hash: `total` orders lost to retention, `p:<partition>` the offset after the last
    lost one recorded (so a range seen twice, after a rebalance, is counted once)."""
    return f"{_tag(group_id)}:lost"


def lost_ranges_key(group_id: str) -> str:
    """List of the lost offset ranges, newest last (JSON of `flashgate.drain.losses.LostRange`)."""
    return f"{_tag(group_id)}:lost-ranges"


def projection_key(group_id: str) -> str:
    """The backlog projection one gateway computed for all, at most a second old
    (gateway/backlog_guard.py)."""
    return f"{_tag(group_id)}:projection"

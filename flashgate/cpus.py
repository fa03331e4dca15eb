"""How many CPUs this process may use: what `workers = 0` and `processes = 0` resolve to.

The affinity mask (taskset, cpusets) bounds it, and so does a cgroup v2 CPU quota
(a container's `cpus` limit): `os.cpu_count()` would count the host's cores and
start more processes than the container may run at once.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """CPUs in the affinity mask, lowered to a cgroup v2 quota when one is set (>= 1)."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    quota = _cgroup_quota(cpu_max)
    if quota is not None:
        count = min(count, quota)
    return max(1, count)


def _cgroup_quota(cpu_max: Path) -> int | None:
    try:
        quota, _, period = cpu_max.read_text().strip().partition(" ")
    except OSError:
        return None
    if quota == "max" or not period:
        return None
    return math.ceil(int(quota) / int(period))


def resolve_count(configured: int, cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """`configured` processes, or one per usable CPU when it is 0."""
    if configured < 0:
        raise ValueError("a process count must be >= 0 (0 = one per CPU)")
    return configured or usable_cpus(cpu_max)

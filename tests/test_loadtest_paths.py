"""Saved benchmark results name no directory of the machine that ran them."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from loadtest.harness import REPO, command_line, repo_relative

RESULTS = [
    REPO / "loadtest" / "RESULTS.md",
    *sorted((REPO / "loadtest" / "results").glob("*.json*")),
]
# A path starting at the root, not part of a URL (`http://host/...`).
ABSOLUTE_PATH = re.compile(r"(?<![\w:/.])/(?:[\w.-]+/)+[\w.-]+")


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.name)
def test_saved_results_carry_no_absolute_path(path: Path) -> None:
    found = ABSOLUTE_PATH.findall(path.read_text(errors="replace"))
    assert not found, found[:5]


def test_commands_are_saved_relative_to_the_repository(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    inside = REPO / "loadtest" / "results" / "b2.json"
    assert repo_relative(str(inside)) == "loadtest/results/b2.json"
    assert repo_relative(str(tmp_path / "b3.json")) == "b3.json"
    assert repo_relative("--orders") == "--orders"
    monkeypatch.setattr(
        sys, "argv", [str(REPO / "loadtest" / "b1_admission.py"), "--out", str(inside)]
    )
    assert command_line("loadtest.b1_admission") == (
        "python -m loadtest.b1_admission --out loadtest/results/b2.json"
    )

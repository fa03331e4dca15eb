"""The supervisor's restart rules on real (tiny) child processes: a child that dies is
restarted after its backoff and counted, one that keeps dying stops everything
with its name, and the record for `flashgate status` follows."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import pytest

from flashgate.cpus import resolve_count, usable_cpus
from flashgate.errors import CrashLoop
from flashgate.stack.process import ManagedProcess
from flashgate.supervisor import RestartPolicy, Supervisor, read_records
from tests.services import wait_until

FAST = RestartPolicy(backoff_first_s=0.05, backoff_max_s=0.2, crash_limit=3, crash_window_s=30)


def _child(tmp_path: Path, name: str, code: str) -> ManagedProcess:
    return ManagedProcess(name, [sys.executable, "-c", code], log_path=tmp_path / f"{name}.log")


def test_a_dead_child_is_restarted_counted_and_recorded(tmp_path: Path) -> None:
    said: list[str] = []
    record = tmp_path / "run" / "sup.json"
    supervisor = Supervisor(policy=FAST, record=record, say=said.append)
    sleeper = _child(tmp_path, "sleeper", "import time; time.sleep(60)")
    supervisor.start(sleeper)
    first = sleeper.pid
    sleeper.kill()

    def restarted() -> bool:
        supervisor.check()
        return supervisor.restarts() == {"sleeper": 1} and sleeper.running()

    assert wait_until(restarted, 10, interval_s=0.02)
    assert sleeper.pid != first
    assert said[0].startswith("sleeper exited with -9; restarting in")
    assert said[1].startswith(f"sleeper restarted (pid {sleeper.pid}")
    assert json.loads(record.read_text())["sleeper"] == {
        "pid": sleeper.pid, "restarts": 1, "last_exit": -9,
    }  # fmt: skip
    assert read_records([record, tmp_path / "absent.json"])["sleeper"]["restarts"] == 1
    supervisor.stop_together(5)
    assert not sleeper.running()
    assert not record.exists()


def test_a_child_that_keeps_crashing_stops_the_supervisor_naming_it(tmp_path: Path) -> None:
    supervisor = Supervisor(policy=FAST, say=lambda line: None)
    supervisor.start(_child(tmp_path, "steady", "import time; time.sleep(60)"))
    supervisor.start(_child(tmp_path, "crasher", "raise SystemExit(3)"))
    stop = threading.Event()
    with pytest.raises(CrashLoop) as caught:
        supervisor.run(stop)
    assert caught.value.name == "crasher"
    assert caught.value.exit_code == 3
    assert "crasher keeps crashing: it exited 4 times within 30 s" in str(caught.value)
    assert supervisor.restarts() == {"steady": 0, "crasher": 3}
    supervisor.stop_in_order(5)
    assert not any(process.running() for process in supervisor.processes)


def test_backoff_doubles_up_to_its_maximum() -> None:
    policy = RestartPolicy(backoff_first_s=0.5, backoff_max_s=3.0)
    assert [policy.backoff_s(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_zero_means_one_process_per_usable_cpu(tmp_path: Path) -> None:
    assert resolve_count(3) == 3
    assert resolve_count(0) == usable_cpus() >= 1
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")  # a container limited to 1.5 CPUs
    cpus = len(os.sched_getaffinity(0))
    assert usable_cpus(quota) == min(2, cpus)
    quota.write_text("max 100000\n")
    assert usable_cpus(quota) == cpus
    with pytest.raises(ValueError):
        resolve_count(-1)

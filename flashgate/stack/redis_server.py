"""A Redis server from Debian's `redis-server` package, on loopback with its own data dir."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from flashgate.errors import StackError
from flashgate.stack.debian import ensure_command
from flashgate.stack.ports import ensure_free, wait_for_port
from flashgate.stack.process import ManagedProcess

HOST = "127.0.0.1"


def ensure_redis_installed() -> str:
    """Return the path of redis-server, installing Debian's package when root."""
    return ensure_command("redis-server", "redis-server")


@dataclass
class RedisServer:
    port: int
    data_dir: Path
    # appendonly: stock reservations and idempotency keys survive a Redis restart.
    appendonly: bool = True
    # More redis-server options (cluster or TLS), appended as given.
    extra_args: list[str] = field(default_factory=list)
    _process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def process(self) -> ManagedProcess | None:
        return self._process

    def start(self, log_path: Path, pid_path: Path | None = None) -> None:
        binary = ensure_redis_installed()
        ensure_free("Redis", HOST, self.port)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            binary,
            "--bind",
            HOST,
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--daemonize",
            "no",
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "everysec",
            "--protected-mode",
            "yes",
            *self.extra_args,
        ]
        self._process = ManagedProcess("redis", argv, log_path=log_path, pid_path=pid_path)
        self._process.start()

    def wait_listening(self, timeout_s: float = 20.0) -> None:
        wait_for_port("Redis", HOST, self.port, timeout_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._process is not None:
            self._process.stop(timeout_s)


def redis_cli(port: int, *command: str) -> str:
    """Run one command with redis-cli against 127.0.0.1:`port` (plaintext); its output."""
    binary = shutil.which("redis-cli") or "redis-cli"
    done = subprocess.run(
        [binary, "-h", HOST, "-p", str(port), *command],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    if done.returncode != 0 or done.stdout.startswith(("ERR", "Could not connect")):
        raise StackError(f"redis-cli {' '.join(command)}: {done.stdout}{done.stderr}".strip())
    return done.stdout

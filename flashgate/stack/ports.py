"""Ports: find a free one, refuse a taken one with a clear message, wait for one to open."""

from __future__ import annotations

import socket
import time

from flashgate.errors import PortInUse, StackError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def is_listening(host: str, port: int, timeout_s: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def ensure_free(name: str, host: str, port: int) -> None:
    """Raise `PortInUse` naming the service when `host:port` cannot be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise PortInUse(name, host, port) from None


def wait_for_port(name: str, host: str, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not is_listening(host, port):
        if time.monotonic() > deadline:
            raise StackError(f"{name} did not open {host}:{port} within {timeout_s:.0f}s")
        time.sleep(0.05)

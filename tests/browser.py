"""A headless Chromium a test can watch: open a page, then read its DOM again and again
(Chrome DevTools Protocol over a websocket) until what it shows is what the test waits
for. Unlike one `--dump-dom` snapshot, this sees a page change while it stays open.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

START_TIMEOUT_S = 30.0
_LISTENING = re.compile(r"DevTools listening on (ws://[^\s]+)")


class Page:
    """One open tab; `evaluate` runs an expression in it and returns its value."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._ids = itertools.count(1)

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """One DevTools command; its result."""
        call_id = next(self._ids)
        await self._socket.send_json({"id": call_id, "method": method, "params": params or {}})
        async for message in self._socket:
            reply = json.loads(message.data)
            if reply.get("id") == call_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
        raise ConnectionError("the browser closed the page")

    async def evaluate(self, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}
        )
        return result["result"].get("value")

    async def emulate_phone(self, width: int = 390, height: int = 844) -> None:
        """A phone's screen: its width in CSS pixels, 3 device pixels each, touch."""
        await self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 3, "mobile": True},
        )

    async def wait_for(self, expression: str, timeout_s: float) -> Any:
        """Evaluate until the value is truthy; that value, or the last one at the deadline."""
        deadline = time.monotonic() + timeout_s
        value = await self.evaluate(expression)
        while not value and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            value = await self.evaluate(expression)
        return value


@contextlib.asynccontextmanager
async def open_page(url: str, profile: Path) -> AsyncIterator[Page]:
    process = _launch(profile)
    try:
        endpoint = await asyncio.wait_for(
            asyncio.to_thread(_devtools_url, process), START_TIMEOUT_S
        )
        http_base = "http://" + endpoint.split("/")[2]
        async with aiohttp.ClientSession() as session:
            async with session.put(f"{http_base}/json/new?{url}") as response:
                target = await response.json()
            async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                yield Page(ws)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _launch(profile: Path) -> subprocess.Popen[str]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    assert binary, "chromium is missing: `make test` installs it (flashgate prepare --tools)"
    return subprocess.Popen(
        [
            binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
            f"--user-data-dir={profile}", "about:blank",
        ],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip


def _devtools_url(process: subprocess.Popen[str]) -> str:
    assert process.stderr is not None
    stderr = process.stderr
    for line in stderr:
        match = _LISTENING.search(line)
        if match:
            # Keep reading what it logs, or a full pipe would stall the browser.
            threading.Thread(target=stderr.read, daemon=True).start()
            return match.group(1)
    raise RuntimeError(f"chromium exited ({process.wait()}) before DevTools listened")

"""The gateway's public app on uvicorn + httptools: B1's "faster ASGI server" row.

Settings come from flashgate.toml and FLASHGATE_* like the real gateway. Only
the public listener runs (sales are loaded straight into Redis by the
benchmark). The app is pure ASGI, so nothing else changes.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvicorn

from flashgate.settings import load_settings
from gateway.app import create_app


def main() -> None:
    settings = load_settings()
    uvicorn.run(
        create_app(settings),
        host=settings.gateway.host,
        port=settings.gateway.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=15,
    )


if __name__ == "__main__":
    main()

"""One logging set-up for every flashgate process: a timestamped line per event."""

from __future__ import annotations

import logging
import os


def configure_logging(name: str) -> None:
    level = os.environ.get("FLASHGATE_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s {name}[%(process)d] %(levelname)s %(name)s: %(message)s",
    )

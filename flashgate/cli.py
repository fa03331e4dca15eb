"""The `flashgate` command: bring the local stack up and prepare what it needs."""

from __future__ import annotations

import argparse
import os
import sys

from flashgate.errors import FlashgateError
from flashgate.logs import configure_logging
from flashgate.settings import load_settings
from flashgate.stack.local import prepare, run_local_stack


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flashgate", description=__doc__)
    parser.add_argument("--config", help="settings file (default: ./flashgate.toml if present)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start Redis, Kafka, backend, consumer and gateway")
    commands.add_parser("prepare", help="install Redis and fetch Kafka's jars, then exit")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure_logging("flashgate")
    if args.config:
        # The processes the stack starts read the same file.
        os.environ["FLASHGATE_CONFIG"] = os.path.abspath(args.config)
    try:
        settings = load_settings(args.config)
        if args.command == "prepare":
            prepare(settings)
            print("ready: redis-server installed, Kafka jars in place")
            sys.exit(0)
        sys.exit(run_local_stack(settings))
    except FlashgateError as exc:
        print(f"flashgate: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

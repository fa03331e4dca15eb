"""The `flashgate` command: the local stack, and ops' tools for sale day.

Every sub-command registers its `run(args, settings) -> exit code` with
`set_defaults(run=...)`; `main` only parses, loads the settings and dispatches.
"""

from __future__ import annotations

import argparse
import os
import sys

from flashgate.dlq import add_dlq_commands
from flashgate.errors import FlashgateError
from flashgate.logs import configure_logging
from flashgate.ops.commands import add_ops_commands
from flashgate.settings import Settings, load_settings
from flashgate.stack.debian import ensure_command
from flashgate.stack.local import prepare, run_local_stack
from flashgate.stack.local_redis import TOPOLOGIES


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    return run_local_stack(settings, redis_topology=args.redis, redis_tls=args.redis_tls)


# command -> Debian package. promtool comes with prometheus; tests run both
# against the shipped rules, and haproxy with the shipped proxy configuration.
TOOLS = {
    "wrk": "wrk",
    "chromium": "chromium",
    "promtool": "prometheus",
    "prometheus": "prometheus",
    "haproxy": "haproxy",
}


def cmd_prepare(args: argparse.Namespace, settings: Settings) -> int:
    prepare(settings)
    for tool in args.tools:
        ensure_command(tool, TOOLS[tool])
    extra = f", {', '.join(args.tools)}" if args.tools else ""
    print(f"ready: redis-server{extra} installed, Kafka jars in place")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flashgate", description=__doc__)
    parser.add_argument("--config", help="settings file (default: ./flashgate.toml if present)")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start Redis, Kafka, backend, consumer and gateway")
    up.add_argument(
        "--redis",
        choices=TOPOLOGIES,
        default="standalone",
        help="Redis topology (make up: FLASHGATE_STACK_REDIS)",
    )
    up.add_argument(
        "--redis-tls",
        action="store_true",
        help="Redis over TLS only (make up: FLASHGATE_STACK_REDIS_TLS=1)",
    )
    up.set_defaults(run=cmd_up)
    prep = commands.add_parser("prepare", help="install Redis and fetch Kafka's jars, then exit")
    prep.add_argument(
        "--tools", nargs="*", default=[], choices=sorted(TOOLS), help="also install these"
    )
    prep.set_defaults(run=cmd_prepare)
    add_ops_commands(commands)
    add_dlq_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure_logging("flashgate")
    if args.config:
        # The processes the stack starts read the same file.
        os.environ["FLASHGATE_CONFIG"] = os.path.abspath(args.config)
    try:
        settings = load_settings(args.config)
        sys.exit(args.run(args, settings))
    except FlashgateError as exc:
        print(f"flashgate: {exc}", file=sys.stderr)
        sys.exit(1)
    except ValueError as exc:
        print(f"flashgate: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

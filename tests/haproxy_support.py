"""Debian's haproxy with the shipped configuration, its addresses moved to the loopback.

The one transformation, on the lines that follow a `# address: <name>` marker in
deploy/compose/haproxy/haproxy.cfg:
- a `bind :<port>` line binds 127.0.0.1 on a free port instead;
- a `server-template ... gateway:<port> ... resolvers docker ...` line (Docker's DNS
  naming every replica) becomes one `server` line per test gateway, with the same
  options less the DNS ones;
and the `resolvers docker` section, then unused, is dropped. On the command line,
`-n` lowers the global maxconn (20,000 wants 40,000 file descriptors, more than a
test machine may allow). Everything else
(balancing, health checks, retries, redispatch, the public path filter) is the
shipped text, so the test exercises what compose runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flashgate.stack.debian import find_command
from flashgate.stack.ports import free_port, wait_for_port
from flashgate.stack.process import ManagedProcess
from tests.deploy_support import COMPOSE_DIR

HAPROXY_CFG = COMPOSE_DIR / "haproxy" / "haproxy.cfg"
START_TIMEOUT_S = 15.0
TEST_MAXCONN = 2_000
_MARKER = re.compile(r"^\s*# address: (\w+)\s*$")
_TEMPLATE = re.compile(r"^(\s*)server-template (\w+) \d+ [\w.-]+:\d+ (.*)$")
_DNS_OPTIONS = re.compile(r"\s*(resolvers \S+|init-addr \S+)")


@dataclass(frozen=True)
class Proxy:
    """Where the running proxy listens, by the marker names of its `bind` lines, and
    where its log goes (one line per request: `option httplog`)."""

    ports: Mapping[str, int]
    log_path: Path

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"


def loopback_config(text: str, servers: Mapping[str, Sequence[int]]) -> tuple[str, dict[str, int]]:
    """The shipped config on the loopback: `servers` maps a backend marker to gateway ports."""
    lines = text.splitlines()
    out: list[str] = []
    ports: dict[str, int] = {}
    marker: str | None = None
    skipping_resolvers = False
    for line in lines:
        if skipping_resolvers:
            if line.startswith((" ", "\t")) or not line.strip():
                continue
            skipping_resolvers = False
        if line.startswith("resolvers "):
            skipping_resolvers = True
            continue
        found = _MARKER.match(line)
        if found:
            marker = found.group(1)
            out.append(line)
            continue
        if marker is not None:
            out.extend(_rewrite(marker, line, servers, ports))
            marker = None
            continue
        out.append(line)
    expected = set(servers) | set(ports)
    missing = {m.group(1) for line in lines if (m := _MARKER.match(line))} - expected
    if missing:
        raise AssertionError(f"haproxy.cfg address markers not rewritten: {sorted(missing)}")
    return "\n".join(out) + "\n", ports


def _rewrite(
    marker: str, line: str, servers: Mapping[str, Sequence[int]], ports: dict[str, int]
) -> list[str]:
    indent = line[: len(line) - len(line.lstrip())]
    if line.strip().startswith("bind :"):
        ports[marker] = free_port()
        return [f"{indent}bind 127.0.0.1:{ports[marker]}"]
    template = _TEMPLATE.match(line)
    if template is None:
        raise AssertionError(f"unexpected line after '# address: {marker}': {line!r}")
    prefix, options = template.group(2), _DNS_OPTIONS.sub("", template.group(3))
    return [
        f"{indent}server {prefix}{i} 127.0.0.1:{port} {options}"
        for i, port in enumerate(servers[marker], start=1)
    ]


@contextmanager
def running_haproxy(
    root: Path,
    servers: Mapping[str, Sequence[int]],
    maxconn: int = TEST_MAXCONN,
    shipped: str | None = None,
) -> Iterator[Proxy]:
    """haproxy in the foreground with the loopback config; stopped even after a failure.
    `maxconn`: the global connection limit (it needs about twice as many descriptors).
    `shipped`: a variant of the shipped file's text to run instead (a benchmark's
    comparison row)."""
    binary = find_command("haproxy")
    assert binary, "haproxy is missing: `make test-tools` installs it (Debian's haproxy)"
    text, ports = loopback_config(shipped or HAPROXY_CFG.read_text(), servers)
    root.mkdir(parents=True, exist_ok=True)
    config = root / "haproxy.cfg"
    config.write_text(text)
    process = ManagedProcess(
        "haproxy",
        [binary, "-db", "-n", str(maxconn), "-f", str(config)],
        log_path=root / "haproxy.log",
    )
    process.start()
    try:
        for port in ports.values():
            try:
                wait_for_port("haproxy", "127.0.0.1", port, START_TIMEOUT_S)
            except Exception as exc:
                raise RuntimeError(f"haproxy did not start:\n{process.log_tail(40)}") from exc
        yield Proxy(ports, process.log_path)
    finally:
        process.stop(timeout_s=10)

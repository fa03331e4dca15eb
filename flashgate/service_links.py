"""Recognise the variables Kubernetes injects for Services (service links).

Kubelet gives every new pod, for every Service with a cluster IP in its
namespace (unless the pod sets `enableServiceLinks: false`), variables named
after the Service: its name uppercased with `-` turned into `_`, then

    <P>_SERVICE_HOST=10.0.0.7               <P>_SERVICE_PORT=9092
    <P>_SERVICE_PORT_<PORT NAME>=9092       <P>_PORT=tcp://10.0.0.7:9092
    <P>_PORT_9092_TCP=tcp://10.0.0.7:9092   <P>_PORT_9092_TCP_PROTO=tcp
    <P>_PORT_9092_TCP_PORT=9092             <P>_PORT_9092_TCP_ADDR=10.0.0.7

(pkg/kubelet/envvars in Kubernetes). A Service whose name starts with
`flashgate-` (Strimzi's `flashgate-kafka-bootstrap`) thus puts FLASHGATE_*
names into the pod that are no settings. The settings loader skips a name only
when it has one of these shapes, its value has the shape kubelet writes, and the
same environment holds the Service's `<P>_SERVICE_HOST` and `<P>_SERVICE_PORT`,
which kubelet always sets together: a mistyped setting alone never qualifies.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping

_PROTOCOLS = "TCP|UDP|SCTP"
# (what the value must look like, the name's shape); longest shape first, so
# `_SERVICE_PORT_<name>` is tried before `_SERVICE_PORT`.
_SHAPES = (
    ("host", re.compile(r"(?P<p>.*)_SERVICE_HOST")),
    ("port", re.compile(r"(?P<p>.*)_SERVICE_PORT_[A-Z0-9_]+")),
    ("port", re.compile(r"(?P<p>.*)_SERVICE_PORT")),
    (
        "part",
        re.compile(
            rf"(?P<p>.*)_PORT_(?P<port>[0-9]+)_(?P<proto>{_PROTOCOLS})_(?P<part>PROTO|PORT|ADDR)"
        ),
    ),
    ("url", re.compile(rf"(?P<p>.*)_PORT_(?P<port>[0-9]+)_(?P<proto>{_PROTOCOLS})")),
    ("url", re.compile(r"(?P<p>.*)_PORT")),
)
_URL = re.compile(rf"(?P<proto>{_PROTOCOLS.lower()})://(?P<host>.+):(?P<port>[0-9]+)")


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_port(value: str) -> bool:
    return value.isdigit() and 0 < int(value) < 65536


def _url_matches(value: str, host: str, port: str | None, proto: str | None) -> bool:
    """`tcp://10.0.0.7:9092` (IPv6 in brackets) for this Service's cluster IP."""
    match = _URL.fullmatch(value)
    if match is None or match["host"].strip("[]") != host or not _is_port(match["port"]):
        return False
    if port is not None and match["port"] != port:
        return False
    return proto is None or match["proto"] == proto.lower()


def _value_fits(kind: str, match: re.Match[str], value: str, host: str) -> bool:
    groups = match.groupdict()
    if kind == "host":
        return value == host
    if kind == "port":
        return _is_port(value)
    if kind == "url":
        return _url_matches(value, host, groups.get("port"), groups.get("proto"))
    if groups["part"] == "PROTO":
        return value == groups["proto"].lower()
    if groups["part"] == "PORT":
        return value == groups["port"]
    return value == host


def is_service_link(name: str, environ: Mapping[str, str]) -> bool:
    """Whether `name` is a variable kubelet injected for a Service in the namespace."""
    value = environ.get(name)
    if value is None:
        return False
    for kind, shape in _SHAPES:
        match = shape.fullmatch(name)
        if match is None:
            continue
        prefix = match["p"]
        host = environ.get(f"{prefix}_SERVICE_HOST", "")
        if not _is_ip(host) or not _is_port(environ.get(f"{prefix}_SERVICE_PORT", "")):
            continue
        if _value_fits(kind, match, value, host):
            return True
    return False

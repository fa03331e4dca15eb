"""The environment kubelet gives a pod: its containers' `env` plus the service links.

Service links follow pkg/kubelet/envvars in Kubernetes: for every Service of the
namespace that has a cluster IP (headless ones are skipped), its name uppercased
with `-` turned into `_` is the prefix of `_SERVICE_HOST`, `_SERVICE_PORT`,
`_SERVICE_PORT_<port name>`, `_PORT` (first port) and `_PORT_<port>_<PROTO>`
with `_PROTO`, `_PORT`, `_ADDR`. Cluster IPs are made up, one per Service.
"""

from __future__ import annotations

from typing import Any

Manifest = dict[str, Any]
# Values for variables that come from Secrets or the downward API, which a test
# cannot resolve; any non-empty string loads.
REFERENCED_VALUE = "from-a-reference"


def _variable_name(name: str) -> str:
    return name.upper().replace("-", "_")


def service_link_variables(service: Manifest, cluster_ip: str) -> dict[str, str]:
    """The variables kubelet injects for one Service whose cluster IP is `cluster_ip`."""
    spec = service["spec"]
    if spec.get("clusterIP") == "None":
        return {}
    prefix = _variable_name(service["metadata"]["name"])
    ports = spec["ports"]
    host_port = f"[{cluster_ip}]" if ":" in cluster_ip else cluster_ip
    found = {
        f"{prefix}_SERVICE_HOST": cluster_ip,
        f"{prefix}_SERVICE_PORT": str(ports[0]["port"]),
    }
    for index, port in enumerate(ports):
        number = port["port"]
        protocol = port.get("protocol", "TCP")
        url = f"{protocol.lower()}://{host_port}:{number}"
        if port.get("name"):
            found[f"{prefix}_SERVICE_PORT_{_variable_name(port['name'])}"] = str(number)
        if index == 0:
            found[f"{prefix}_PORT"] = url
        link = f"{prefix}_PORT_{number}_{protocol.upper()}"
        found[link] = url
        found[f"{link}_PROTO"] = protocol.lower()
        found[f"{link}_PORT"] = str(number)
        found[f"{link}_ADDR"] = cluster_ip
    return found


def namespace_service_links(services: list[Manifest]) -> dict[str, str]:
    """Every Service's link variables, each Service with its own made-up cluster IP."""
    found: dict[str, str] = {}
    for index, service in enumerate(services):
        found.update(service_link_variables(service, f"10.96.{index // 250}.{index % 250 + 1}"))
    return found


def container_env(container: Manifest) -> dict[str, str]:
    """A container's own `env`, with values from references replaced by a placeholder."""
    found: dict[str, str] = {}
    for variable in container.get("env", []):
        found[variable["name"]] = variable.get("value", REFERENCED_VALUE)
    return found

"""Whether a connection is allowed under a set of Kubernetes NetworkPolicies (ingress only).

The semantics of networking.k8s.io/v1: a pod selected by any policy with
`Ingress` in its policyTypes is isolated, and then takes a connection only if
some such policy has a rule whose `from` (absent = anyone) and `ports` (absent =
every port) both match. A peer with only `podSelector` means pods of the
policy's namespace; only `namespaceSelector`, every pod of those namespaces;
both, the pods matching both. Label selectors support matchLabels and
matchExpressions (In, NotIn, Exists, DoesNotExist); ports are numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: dict[str, str]
    namespace_labels: dict[str, str] = field(default_factory=dict)


def selects(selector: Manifest | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return False
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def _peer_matches(peer: Manifest, policy_namespace: str, source: Pod) -> bool:
    if "ipBlock" in peer:
        return False  # pods are not addressed by IP blocks here
    if "namespaceSelector" in peer:
        in_namespace = selects(peer["namespaceSelector"], source.namespace_labels)
    else:
        in_namespace = source.namespace == policy_namespace
    pod_ok = selects(peer["podSelector"], source.labels) if "podSelector" in peer else True
    return in_namespace and pod_ok


def _rule_allows(rule: Manifest, policy_namespace: str, source: Pod, port: int) -> bool:
    peers = rule.get("from")
    if peers and not any(_peer_matches(peer, policy_namespace, source) for peer in peers):
        return False
    ports = rule.get("ports")
    return not ports or any(entry.get("port") == port for entry in ports)


def allowed(policies: list[Manifest], source: Pod, target: Pod, port: int) -> bool:
    """Whether `source` may open a connection to `target` on `port`."""
    relevant = [
        policy
        for policy in policies
        if policy["metadata"].get("namespace", target.namespace) == target.namespace
        and "Ingress" in policy["spec"].get("policyTypes", ["Ingress"])
        and selects(policy["spec"]["podSelector"], target.labels)
    ]
    if not relevant:
        return True
    return any(
        _rule_allows(rule, target.namespace, source, port)
        for policy in relevant
        for rule in policy["spec"].get("ingress", [])
    )

"""Offline checks of the deploy files, shared by the tests/test_deploy_*.py modules.

- Kubernetes objects are validated against the strict JSON schemas that the
  `kubernetes-validate` package ships (no cluster, no network), custom resources
  (Strimzi's, the Prometheus Operator's) against the schemas in deploy/k8s/schemas/.
- Kustomize overlays are rendered by `kustomize build`, or `kubectl kustomize`
  (kubectl embeds kustomize), whichever is installed.
- The compose file is validated against the Compose Specification schema that
  `check-jsonschema` vendors.
- Every FLASHGATE_* variable a deploy sets must name a field of the settings.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import yaml
from referencing import Registry, Resource

from flashgate.settings import CONFIG_ENV, ENV_PREFIX, SECTIONS

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
# The secured variant: an override file, `docker compose -f compose.yaml -f compose.secured.yaml`.
COMPOSE_SECURED_FILE = COMPOSE_DIR / "compose.secured.yaml"
# Hand-written schemas of the custom resources, one directory per API group.
CRD_SCHEMAS = K8S / "schemas"
KUSTOMIZE_TIMEOUT_S = 60
# Where `go install` puts kustomize when neither it nor kubectl is on PATH.
LOCAL_KUSTOMIZE = REPO / ".cache" / "bin" / "kustomize"
# The oldest Kubernetes the manifests promise to work on (HPA v2 behaviour,
# PDB policy/v1, preStop exec): 1.30 is the oldest release still supported by
# the major clouds. Validated strictly: an unknown field is an error.
KUBERNETES_VERSION = "1.30.0"

Manifest = dict[str, Any]


class ToolMissing(Exception):
    """A tool a deploy test needs is not installed; the message says how to get it."""


def load_yaml_documents(path: Path) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kustomize_build(directory: Path) -> list[Manifest]:
    """Render a kustomization with kustomize (standalone, or the one inside kubectl)."""
    standalone = LOCAL_KUSTOMIZE if LOCAL_KUSTOMIZE.is_file() else shutil.which("kustomize")
    if standalone:
        command = [str(standalone), "build", str(directory)]
    elif shutil.which("kubectl"):
        command = ["kubectl", "kustomize", str(directory)]
    else:
        raise ToolMissing(
            "neither kustomize nor kubectl is installed: GOBIN=$PWD/.cache/bin "
            "go install sigs.k8s.io/kustomize/kustomize/v5@v5.5.0"
        )
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=KUSTOMIZE_TIMEOUT_S, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _package_dir(package: str, requirement: str) -> Path:
    """Where an installed package's data files are; a clear error when it is missing."""
    try:
        return Path(str(resources.files(package)))
    except ModuleNotFoundError:
        raise ToolMissing(f"{package} is not installed: pip install {requirement}") from None


def _kubernetes_schema_dir() -> Path:
    root = _package_dir("kubernetes_validate", "kubernetes-validate==1.37.0")
    path = root / "kubernetes-json-schema" / f"v{KUBERNETES_VERSION}-local-strict"
    if not path.is_dir():
        raise ToolMissing(
            f"kubernetes-validate has no schemas for {KUBERNETES_VERSION}: "
            "pip install kubernetes-validate==1.37.0"
        )
    return path


@cache
def _kubernetes_registry() -> Registry[Any]:
    definitions = json.loads((_kubernetes_schema_dir() / "_definitions.json").read_text())
    registry: Registry[Any] = Registry().with_resource(
        definitions["$id"], Resource.from_contents(definitions)
    )
    return registry


def _schema_for(manifest: Manifest) -> dict[str, Any]:
    api_version: str = manifest["apiVersion"]
    kind: str = manifest["kind"]
    group, _, version = api_version.rpartition("/")
    # Custom resources (Strimzi's; the Prometheus Operator's) have their schemas here.
    if group and (CRD_SCHEMAS / group).is_dir():
        path = CRD_SCHEMAS / group / f"{kind.lower()}_{version}.json"
    else:
        # kubernetes-validate's naming: apps/v1 -> apps-v1, policy/v1 -> policy-v1, v1 -> v1.
        prefix = f"{group.split('.')[0]}-" if group else ""
        path = _kubernetes_schema_dir() / f"{kind.lower()}-{prefix}{version}.json"
    if not path.is_file():
        raise AssertionError(f"no schema for {kind} {api_version} (looked for {path})")
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


def schema_errors(manifest: Manifest) -> list[str]:
    """Every schema violation of one manifest, as `kind/name: path: message`."""
    schema = _schema_for(manifest)
    registry = _kubernetes_registry() if "$id" in schema else Registry()
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    name = f"{manifest.get('kind')}/{manifest.get('metadata', {}).get('name')}"
    return [
        f"{name}: {'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in validator.iter_errors(manifest)
    ]


def compose_schema_errors(document: Manifest) -> list[str]:
    root = _package_dir("check_jsonschema", "check-jsonschema==0.39.0")
    path = root / "builtin_schemas" / "vendor" / "compose-spec.json"
    if not path.is_file():
        raise ToolMissing("the Compose schema is missing: pip install check-jsonschema==0.39.0")
    schema = json.loads(path.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema)
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in validator.iter_errors(document)
    ]


# Sequences an override replaces rather than extends (Compose Specification, "Merge").
_REPLACED_SEQUENCES = frozenset({"command", "entrypoint", "test", "dns", "dns_search"})


def _merge_key(key: str, item: Any) -> Any:
    """What makes two items of a merged sequence the same item: a volume's target, a
    secret's source; anything else is itself."""
    if key == "volumes" and isinstance(item, str):
        parts = item.split(":")
        return parts[1] if len(parts) > 1 else parts[0]
    if key == "volumes" and isinstance(item, dict):
        return item.get("target")
    if key == "secrets" and isinstance(item, dict):
        return item.get("source")
    return json.dumps(item, sort_keys=True)


def _merge(base: Any, override: Any, key: str = "") -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for name, value in override.items():
            merged[name] = _merge(base[name], value, name) if name in base else value
        return merged
    if isinstance(base, list) and isinstance(override, list) and key not in _REPLACED_SEQUENCES:
        by_key = {_merge_key(key, item): item for item in base}
        for item in override:
            by_key[_merge_key(key, item)] = item
        return list(by_key.values())
    return override


def compose_merged(*paths: Path) -> Manifest:
    """The document `docker compose -f A -f B ...` runs, for the keys these deploy files
    use: mappings merged key by key, `command`/`entrypoint`/`healthcheck.test` replaced,
    `volumes` merged by target and other sequences by value (the Compose
    Specification's merge rules). YAML anchors and `<<` are resolved per file first."""
    merged: Manifest = {}
    for path in paths:
        merged = _merge(merged, yaml.safe_load(path.read_text()))
    return merged


def settings_env_names() -> set[str]:
    """Every FLASHGATE_* variable the settings loader accepts, built from the Settings types."""
    names = {CONFIG_ENV}
    for section, struct in SECTIONS.items():
        for field in msgspec.structs.fields(struct):
            names.add(f"{ENV_PREFIX}{section.upper()}_{field.name.upper()}")
    return names


def by_kind(manifests: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def containers(manifest: Manifest) -> list[Manifest]:
    found: list[Manifest] = manifest["spec"]["template"]["spec"]["containers"]
    return found

"""The shipped alert rules pass promtool: they load, and each alert's unit tests pass.

deploy/compose/prometheus/alerts_test.yml gives every alert a case where it fires
on its condition and one where it stays quiet; this module checks that it does
for every alert in alerts.yml, then runs it with Debian's promtool. The
PrometheusRule of deploy/k8s/monitoring must carry the same groups.
"""

from __future__ import annotations

import subprocess
from typing import Any

import yaml

from tests.deploy_support import K8S
from tests.prometheus_support import ALERTS, ALERTS_TEST, tool

PROMTOOL_TIMEOUT_S = 60
PROMETHEUS_RULE = K8S / "monitoring" / "prometheus-rules.yaml"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *args],
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT_S,
        check=False,
        cwd=ALERTS.parent,
    )


def test_promtool_accepts_the_shipped_rules() -> None:
    result = _promtool("check", "rules", ALERTS.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    cases: list[dict[str, Any]] = [
        case
        for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"]
        for case in test["alert_rule_test"]
    ]
    fires = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    assert names - fires == set(), "alerts never shown firing"
    assert names - quiet == set(), "alerts never shown quiet"
    assert (fires | quiet) - names == set(), "unit tests of alerts that do not exist"


def test_promtool_unit_tests_of_every_alert_pass() -> None:
    result = _promtool("test", "rules", ALERTS_TEST.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_kubernetes_prometheus_rule_carries_the_same_groups() -> None:
    rule = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"], (
        f"copy the groups of {ALERTS.name} into {PROMETHEUS_RULE}"
    )

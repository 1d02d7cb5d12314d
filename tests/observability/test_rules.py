"""The Prometheus rules and the dashboard as shipped: valid, unit-tested, copies identical."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from tests.observability.conftest import CHART_FILES, DASHBOARD, MANIFEST_DIR, RULES

RULE_TESTS = sorted((Path(__file__).parent / "rules_tests").glob("*.yaml"))


def _rules() -> list[dict[str, object]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_manifest_copies_are_identical() -> None:
    for name in ("prometheus-rules.yaml", "grafana-dashboard.json"):
        assert (MANIFEST_DIR / name).read_bytes() == (CHART_FILES / name).read_bytes(), (
            f"manifests/monitoring/{name} differs from charts/serving/files/{name}: copy it over"
        )


def test_promtool_check_rules(promtool: str) -> None:
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_promtool_test_rules(promtool: str) -> None:
    assert RULE_TESTS, "no rule unit tests found"
    result = subprocess.run(
        [promtool, "test", "rules", *map(str, RULE_TESTS)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS), result.stdout


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    alerts = {str(rule["alert"]) for rule in _rules() if "alert" in rule}
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert alerts - fires == set(), f"alerts never tested firing: {sorted(alerts - fires)}"
    assert alerts - quiet == set(), f"alerts never tested not firing: {sorted(alerts - quiet)}"
    assert (fires | quiet) - alerts == set(), "tests name alerts the rules do not define"


def test_dashboard_is_well_formed() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "serving-overview" and dash["schemaVersion"] >= 36
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert variables == {"datasource", "model", "version"}
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    titles = {p["title"] for p in dash["panels"] if p["type"] != "row"}
    # what the issue asks the dashboard to show
    for needed in (
        "Requests per second",
        "Server error ratio",
        "Request latency p50",
        "Request latency p95",
        "Request latency p99",
        "Queue wait vs compute (p50, p95)",
        "Batch size",
        "In-flight requests",
        "Load shed ratio",
        "Traffic by variant",
        "p99 latency by variant",
        "Shadow mismatch ratio",
        "Payload events dropped",
        "Payload sink errors",
        "Feature drift (PSI, fleet)",
        "Prediction drift (PSI, fleet)",
        "Out-of-range share",
        "Missing share",
    ):
        assert needed in titles
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]

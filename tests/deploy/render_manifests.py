"""Regenerate manifests/monitoring/prometheusrule.yaml from the chart's rule groups.

    python -m tests.deploy.render_manifests

Kustomize cannot wrap a plain rules file in a PrometheusRule, so the wrapped copy is committed
and tests/deploy/test_manifests.py fails when it drifts from charts/serving/files/.
"""

from __future__ import annotations

import sys

import yaml

from tests.server_process import ROOT

RULES = ROOT / "charts" / "serving" / "files" / "prometheus-rules.yaml"
PROMETHEUS_RULE = ROOT / "manifests" / "monitoring" / "prometheusrule.yaml"


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (PromQL expressions, descriptions) as readable | blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def prometheus_rule_yaml() -> str:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "serving",
            "labels": {
                "app.kubernetes.io/name": "serving",
                "app.kubernetes.io/component": "monitoring",
                "app.kubernetes.io/part-of": "serving",
            },
        },
        "spec": {"groups": groups},
    }
    header = (
        "# Generated from charts/serving/files/prometheus-rules.yaml by\n"
        "#   python -m tests.deploy.render_manifests\n"
        "# Do not edit: change the rules file and regenerate.\n"
    )
    return header + yaml.dump(rule, Dumper=_BlockDumper, sort_keys=False, width=1000)


def main() -> int:
    PROMETHEUS_RULE.write_text(prometheus_rule_yaml())
    print(f"wrote {PROMETHEUS_RULE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

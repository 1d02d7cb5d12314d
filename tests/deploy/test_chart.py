"""charts/serving: lint clean with the real Helm engine (helm-sdkpy), every object it renders for
several values sets valid against the Kubernetes schemas and KServe's CRDs, and broken values
rejected by values.schema.json with a message that names the field."""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
from pathlib import Path
from typing import Any

import helm_sdkpy
import jsonschema
import pytest
import yaml

from tests.deploy.helm_render import render
from tests.deploy.k8s_schemas import validate_object
from tests.server_process import ROOT

CHART = ROOT / "charts" / "serving"
FILES = CHART / "files"
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
DEFAULTS: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
LINT_WARNING = 2  # Helm's support.WarningSev; 1 is INFO (e.g. "icon is recommended")

ALL_MODES = {
    "models": [
        {"name": "iris-xgb", "format": "xgboost", "storageUri": "pvc://serving-models/iris-xgb",
         "canaryTrafficPercent": 10},
        {"name": "cancer-onnx", "format": "onnx", "storageUri": "pvc://serving-models/cancer-onnx",
         "minReplicas": 0, "autoscaler": {"class": "knative", "target": 4, "containerConcurrency": 8}},
        {"name": "cancer-xgb", "format": "xgboost", "storageUri": "pvc://serving-models/cancer-xgb",
         "minReplicas": 2, "maxReplicas": 6, "autoscaler": {"class": "hpa"},
         "inPodTraffic": {"adminTokenSecret": "cancer-admin"},
         "env": [{"name": "SERVING_LOG_LEVEL", "value": "debug"}],
         "resources": {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}}},
        {"name": "digits-mlp", "format": "onnx", "storageUri": "pvc://serving-models/digits-mlp",
         "minReplicas": 2, "maxReplicas": 8, "autoscaler": {"class": "keda", "target": 6}},
        {"name": "fixed", "format": "onnx", "storageUri": "s3://bucket/fixed", "minReplicas": 3,
         "autoscaler": {"class": "none"}},
    ],
    "monitoring": {
        "podMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "grafanaDashboard": {"enabled": True},
    },
}  # fmt: skip
CLUSTER_RUNTIME = {
    "runtime": {"cluster": True},
    "models": [{"name": "cancer-xgb", "format": "xgboost", "storageUri": "pvc://m/cancer-xgb",
                "autoscaler": {"class": "hpa", "target": 60}}],
}  # fmt: skip


def lint(chart: Path) -> dict[str, Any]:
    config = helm_sdkpy.Configuration(namespace="default")
    result: dict[str, Any] = asyncio.run(helm_sdkpy.Lint(config).run(str(chart)))
    return result


def merged(values: dict[str, Any]) -> dict[str, Any]:
    """values.yaml overlaid with ``values`` (lists replaced), as Helm merges them."""
    out = copy.deepcopy(DEFAULTS)
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged_dict(out[key], value)
        else:
            out[key] = value
    return out


def merged_dict(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = (
            merged_dict(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


def test_lint_is_clean() -> None:
    result = lint(CHART)
    assert result["TotalChartsLinted"] == 1
    assert not result["Errors"]
    assert [m for m in result["Messages"] if m["Severity"] >= LINT_WARNING] == []


def test_lint_catches_a_broken_template(tmp_path: Path) -> None:
    chart = tmp_path / "serving"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "broken.yaml").write_text("kind: ConfigMap\nname: {{ .Values.nope.missing }\n")
    result = lint(chart)
    assert result["Errors"] or any(m["Severity"] > LINT_WARNING for m in result["Messages"])


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    out = {}
    for name, values in (("defaults", None), ("all-modes", ALL_MODES), ("cluster-runtime", CLUSTER_RUNTIME)):
        out[name] = render(CHART, values, tmp_path_factory.mktemp(name))
    return out


def objects_of(release: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in release["objects"] if o["kind"] == kind}


@pytest.mark.parametrize("values_set", ["defaults", "all-modes", "cluster-runtime"])
def test_every_rendered_object_is_valid(rendered: dict[str, dict[str, Any]], values_set: str) -> None:
    release = rendered[values_set]
    objects = release["objects"]
    # What Helm sent to the API is what its release manifest holds, object for object.
    assert len(objects) == len([d for d in yaml.safe_load_all(release["manifest"]) if d])
    assert [p for o in objects for p in validate_object(o)] == []
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "serving"
        assert labels["app.kubernetes.io/instance"] == "demo"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["helm.sh/chart"] == "serving-0.1.0"
        assert labels["app.kubernetes.io/component"] in {"runtime", "model", "monitoring"}


def test_defaults_render_one_knative_model(rendered: dict[str, dict[str, Any]]) -> None:
    release = rendered["defaults"]
    runtimes = objects_of(release, "ServingRuntime")
    assert set(runtimes) == {"demo-serving", "demo-serving-knative"}
    (isvc,) = objects_of(release, "InferenceService").values()
    predictor = isvc["spec"]["predictor"]
    assert predictor["model"]["runtime"] == "demo-serving-knative"
    assert (predictor["scaleMetric"], predictor["scaleTarget"], predictor["containerConcurrency"]) == (
        "concurrency", DEFAULTS["autoscaling"]["knative"]["target"],
        DEFAULTS["autoscaling"]["knative"]["containerConcurrency"],
    )  # fmt: skip
    assert "iris-xgb" in release["info"]["notes"]


def test_all_modes(rendered: dict[str, dict[str, Any]]) -> None:
    release = rendered["all-modes"]
    isvcs = objects_of(release, "InferenceService")
    mode = {n: i["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] for n, i in isvcs.items()}
    assert mode == {"iris-xgb": "Serverless", "cancer-onnx": "Serverless", "cancer-xgb": "RawDeployment",
                    "digits-mlp": "RawDeployment", "fixed": "RawDeployment"}  # fmt: skip
    assert isvcs["iris-xgb"]["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert isvcs["cancer-onnx"]["spec"]["predictor"]["scaleTarget"] == 4
    hpa = isvcs["cancer-xgb"]["spec"]["predictor"]
    assert (hpa["scaleMetric"], hpa["scaleTarget"]) == ("cpu", DEFAULTS["autoscaling"]["hpa"]["target"])
    assert hpa["model"]["runtime"] == "demo-serving"
    env = {e["name"]: e for e in hpa["model"]["env"]}
    assert env["SERVING_LOG_LEVEL"]["value"] == "debug"
    assert env["SERVING_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "cancer-admin", "key": "token"}
    assert hpa["model"]["resources"]["limits"]["cpu"] == "2"
    fixed = isvcs["fixed"]["spec"]["predictor"]
    assert fixed["minReplicas"] == fixed["maxReplicas"] == 3
    (scaled,) = objects_of(release, "ScaledObject").values()
    assert scaled["spec"]["scaleTargetRef"]["name"] == "digits-mlp-predictor"
    trigger = scaled["spec"]["triggers"][0]["metadata"]
    assert trigger["query"] == 'sum(serving_inflight_requests{model="digits-mlp", namespace="models"})'
    assert trigger["threshold"] == "6"
    assert isvcs["digits-mlp"]["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "external"
    assert set(objects_of(release, "PodDisruptionBudget")) == {
        "cancer-xgb-predictor", "digits-mlp-predictor", "fixed-predictor"
    }  # fmt: skip
    rule = next(iter(objects_of(release, "PrometheusRule").values()))
    assert rule["spec"]["groups"] == yaml.safe_load((FILES / "prometheus-rules.yaml").read_text())["groups"]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    dashboard = objects_of(release, "ConfigMap")["demo-serving-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["serving-dashboard.json"]) == json.loads(
        (FILES / "grafana-dashboard.json").read_text()
    )
    (monitor,) = objects_of(release, "PodMonitor").values()
    assert set(monitor["spec"]["selector"]["matchExpressions"][0]["values"]) == set(isvcs)


def test_cluster_runtime_only_when_asked(rendered: dict[str, dict[str, Any]]) -> None:
    release = rendered["cluster-runtime"]
    assert set(objects_of(release, "ClusterServingRuntime")) == {"demo-serving"}
    assert objects_of(release, "ServingRuntime") == {}
    assert "namespace" not in objects_of(release, "ClusterServingRuntime")["demo-serving"]["metadata"]
    assert objects_of(release, "InferenceService")["cancer-xgb"]["spec"]["predictor"]["scaleTarget"] == 60


BROKEN = [
    ({"models": [{"name": "m", "format": "sklearn", "storageUri": "pvc://m"}]},
     "models/0/format", "'onnx', 'xgboost', 'lightgbm'"),
    ({"models": [{"name": "m", "format": "onnx", "storageUri": "pvc://m", "minReplicas": -1}]},
     "models/0/minReplicas", "-1 is less than the minimum of 0"),
    ({"models": [{"name": "m", "format": "onnx", "storageUri": "pvc://m", "canaryTrafficPercent": 150}]},
     "models/0/canaryTrafficPercent", "150 is greater than the maximum of 100"),
    ({"models": [{"name": "m", "format": "onnx", "storageUri": "pvc://m", "autoscaler": {"class": "vpa"}}]},
     "models/0/autoscaler/class", "'knative', 'hpa', 'keda', 'none'"),
    ({"models": [{"name": "m", "format": "onnx", "storageUri": "pvc://m", "replicas": 2}]},
     "models/0", "'replicas' was unexpected"),
    ({"models": [{"name": "Bad_Name", "format": "onnx", "storageUri": "pvc://m"}]},
     "models/0/name", "does not match"),
]  # fmt: skip


@pytest.mark.parametrize(("values", "path", "message"), BROKEN)
def test_schema_rejects_broken_values(values: dict[str, Any], path: str, message: str) -> None:
    errors = list(jsonschema.Draft7Validator(SCHEMA).iter_errors(merged(values)))
    described = [f"{'/'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in errors]
    assert any(d.startswith(f"{path}: ") and message in d for d in described), described


def test_schema_accepts_the_values_used_above() -> None:
    for values in ({}, ALL_MODES, CLUSTER_RUNTIME):
        jsonschema.Draft7Validator(SCHEMA).validate(merged(values))


def test_helm_itself_enforces_the_schema_and_the_template_checks(tmp_path: Path) -> None:
    with pytest.raises(helm_sdkpy.InstallError) as exc:
        render(CHART, BROKEN[2][0], tmp_path)
    assert "at '/models/0/canaryTrafficPercent': maximum: got 150, want 100" in str(exc.value)
    with pytest.raises(helm_sdkpy.InstallError) as exc:
        render(CHART, BROKEN[0][0], tmp_path)
    assert "at '/models/0/format': value must be one of 'onnx', 'xgboost', 'lightgbm'" in str(exc.value)
    canary_on_hpa = {"models": [{"name": "m", "format": "onnx", "storageUri": "pvc://m",
                                 "autoscaler": {"class": "hpa"}, "canaryTrafficPercent": 10}]}  # fmt: skip
    with pytest.raises(
        helm_sdkpy.InstallError, match=r"canaryTrafficPercent needs autoscaler\.class knative"
    ):
        render(CHART, canary_on_hpa, tmp_path)
    upside_down = {"models": [{"name": "m", "format": "onnx", "storageUri": "pvc://m", "minReplicas": 5,
                               "maxReplicas": 2}]}  # fmt: skip
    with pytest.raises(helm_sdkpy.InstallError, match=r"minReplicas \(5\) is greater than maxReplicas \(2\)"):
        render(CHART, upside_down, tmp_path)


def test_chart_runtime_matches_the_manifest(rendered: dict[str, dict[str, Any]]) -> None:
    """The chart and manifests/ install the same container (args, env, ports, probes, security)."""
    manifest = yaml.safe_load((ROOT / "manifests" / "runtime" / "servingruntime.yaml").read_text())["spec"]
    chart = objects_of(rendered["defaults"], "ServingRuntime")["demo-serving"]["spec"]
    assert chart == manifest
    knative = yaml.safe_load((ROOT / "manifests" / "runtime" / "servingruntime-knative.yaml").read_text())
    assert (
        objects_of(rendered["defaults"], "ServingRuntime")["demo-serving-knative"]["spec"] == knative["spec"]
    )


def test_docs_show_the_defaults_they_derive() -> None:
    """docs/deploy.md's arithmetic ends in the numbers values.yaml and manifests/ use."""
    docs = (ROOT / "docs" / "deploy.md").read_text()
    knative, keda, hpa = (DEFAULTS["autoscaling"][k] for k in ("knative", "keda", "hpa"))
    assert (
        f"`scaleTarget: {knative['target']}`, `containerConcurrency: {knative['containerConcurrency']}`"
        in docs
    )
    assert f"= **{knative['target']}** in-flight per pod" in docs
    assert f"`N*` = **{knative['containerConcurrency']}**" in docs  # 2 x the knee
    assert f"the same **{keda['target']}** average `serving_inflight_requests`" in docs
    assert f"**HPA CPU target** = **{hpa['target']} %**" in docs
    isvcs = [
        d for d in yaml.safe_load_all((ROOT / "manifests" / "knative" / "inferenceservices.yaml").read_text())
    ]
    assert {i["spec"]["predictor"]["scaleTarget"] for i in isvcs} == {knative["target"]}
    keda_file = (ROOT / "manifests" / "raw" / "digits-mlp-keda.yaml").read_text()
    scaled = next(d for d in yaml.safe_load_all(keda_file) if d["kind"] == "ScaledObject")
    assert scaled["spec"]["triggers"][0]["metadata"]["threshold"] == str(keda["target"])

"""charts/serving: lint clean with the real Helm engine (helm-sdkpy); every object it renders for
every documented values set valid against the Kubernetes schemas and KServe's CRDs and accepted
by KServe's admission rules as ported in tests/deploy/kserve_rules.py, for each KServe release
the chart can target; what KServe's controller then runs (replicas per autoscaler class, the
runtime it selects) is what NOTES.txt prints; broken values rejected by values.schema.json (and
Helm itself) with a message that names the field."""

from __future__ import annotations

import asyncio
import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import helm_sdkpy
import jsonschema
import pytest
import yaml

from serving.rollout.kserve import DEFAULT_CANARY_NAME, standard_promote_patch, standard_start_patch
from tests.deploy.helm_render import render
from tests.deploy.installed import install_runtimes
from tests.deploy.k8s_schemas import validate_object
from tests.deploy.kserve_rules import (
    RELEASES,
    KServe,
    admit_isvc,
    builtin_runtimes,
    predictor_service,
    replica_plan,
    select_runtime,
    stable_floor,
    validate_runtime,
)
from tests.rollout.kube_fake import merge_patch
from tests.server_process import ROOT

CHART = ROOT / "charts" / "serving"
FILES = CHART / "files"
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
DEFAULTS: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
Obj = dict[str, Any]
LINT_WARNING = 2  # Helm's support.WarningSev; 1 is INFO (e.g. "icon is recommended")
NAMESPACE = "models"  # helm_render's default
LONGEST = "m" + "-0123456789" * 4 + "a"  # 46 characters: the schema's maxLength
assert len(LONGEST) == 46

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
        {"name": "single", "format": "xgboost", "storageUri": "s3://bucket/single", "minReplicas": 1,
         "autoscaler": {"class": "none"}},
    ],
    "monitoring": {
        "selectorLabels": {"release": "kube-prometheus-stack"},
        "podMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True, "labels": {"team": "ml"}},
        "grafanaDashboard": {"enabled": True},
    },
}  # fmt: skip
POD_SETTINGS = {
    "runtime": {"securityContext": {"runAsUser": 1000650000, "runAsGroup": 0}},
    "serviceAccountName": "model-reader",
    "imagePullSecrets": [{"name": "regcred"}],
    "nodeSelector": {"node.kubernetes.io/instance-type": "c6i.large"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "inference", "effect": "NoSchedule"}],
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}},
    "topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"},
        {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
         "labelSelector": {"matchLabels": {"team": "ml"}}},
    ],
    "priorityClassName": "inference-critical",
    "podAnnotations": {"sidecar.istio.io/inject": "false"},
    "models": [
        {"name": "iris-xgb", "format": "xgboost", "storageUri": "s3://bucket/iris",
         "autoscaler": {"class": "hpa"}, "minReplicas": 2},
        {"name": "cancer-onnx", "format": "onnx", "storageUri": "s3://bucket/cancer",
         "serviceAccountName": "other-reader", "nodeSelector": {"pool": "gpu"}, "tolerations": [],
         "priorityClassName": "batch", "podAnnotations": {"a": "b"}},
    ],
}  # fmt: skip
KEDA_CHART = {
    "keda": {"owner": "chart", "window": "2m", "fallback": {"failureThreshold": 5, "replicas": 4}},
    "models": [
        {"name": "digits-mlp", "format": "onnx", "storageUri": "pvc://m/digits", "minReplicas": 2,
         "maxReplicas": 8, "autoscaler": {"class": "keda"}},
        {"name": "own-fallback", "format": "onnx", "storageUri": "pvc://m/x", "minReplicas": 1,
         "maxReplicas": 3, "autoscaler": {"class": "keda", "fallbackReplicas": 2, "target": 2.5}},
    ],
}  # fmt: skip
CLUSTER_RUNTIME = {
    "runtime": {"cluster": True, "autoSelect": True, "name": "serving"},
    "models": [{"name": "cancer-xgb", "format": "xgboost", "storageUri": "pvc://m/cancer-xgb",
                "autoscaler": {"class": "hpa", "target": 60}}],
}  # fmt: skip
EXISTING_RUNTIME = {
    "runtime": {"create": False, "name": "shared-serving"},
    "models": [
        {"name": "a", "format": "onnx", "storageUri": "pvc://m/a"},
        {"name": "b", "format": "onnx", "storageUri": "pvc://m/b", "autoscaler": {"class": "hpa"}},
    ],
}  # fmt: skip
LONG_NAMES = {
    "models": [
        {"name": LONGEST, "format": "onnx", "storageUri": "pvc://m/a", "canaryTrafficPercent": 10},
        {"name": LONGEST[:-1] + "s", "format": "onnx", "storageUri": "pvc://m/b", "minReplicas": 2,
         "autoscaler": {"class": "keda"}},
    ],
    "keda": {"owner": "chart"},
    "monitoring": {"podMonitor": {"enabled": True}},
}  # fmt: skip

VALUE_SETS: dict[str, dict[str, Any] | None] = {
    "defaults": None,
    "all-modes": ALL_MODES,
    "pod-settings": POD_SETTINGS,
    "keda-chart": KEDA_CHART,
    "cluster-runtime": CLUSTER_RUNTIME,
    "existing-runtime": EXISTING_RUNTIME,
    "long-names": LONG_NAMES,
    "rollout-rbac": {
        "rbac": {
            "rollout": {
                "create": True,
                "subjects": [{"kind": "ServiceAccount", "name": "ci", "namespace": "ci"}],
            }
        }
    },
}


def chart_version(release: str) -> str:
    """kserve.version for a KServe release of the ported rules (master = after 0.20.0)."""
    return "0.20.0" if release == "master" else release.removeprefix("v")


def with_version(values: dict[str, Any] | None, release: str) -> dict[str, Any]:
    return {**(values or {}), "kserve": {"version": chart_version(release)}}


# ALL_MODES once more for every other KServe release the ported rules know.
VALUE_SETS.update({f"kserve-{r}": with_version(ALL_MODES, r) for r in RELEASES if r != "v0.20.0"})
RELEASE_OF = {
    name: name.removeprefix("kserve-") if name.startswith("kserve-") else "v0.20.0" for name in VALUE_SETS
}


def lint(chart: Path) -> dict[str, Any]:
    config = helm_sdkpy.Configuration(namespace="default")
    result: dict[str, Any] = asyncio.run(helm_sdkpy.Lint(config).run(str(chart)))
    return result


def merged(values: dict[str, Any]) -> dict[str, Any]:
    """values.yaml overlaid with ``values`` (lists replaced), as Helm merges them."""
    return merged_dict(DEFAULTS, values)


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
    return {name: render(CHART, values, tmp_path_factory.mktemp(name)) for name, values in VALUE_SETS.items()}


def objects_of(release: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in release["objects"] if o["kind"] == kind}


def notes_line(release: dict[str, Any], model: str) -> str:
    notes: str = release["info"]["notes"]
    (line,) = [ln for ln in notes.splitlines() if ln.startswith(f"  - {model} (")]
    return line


@pytest.mark.parametrize("values_set", list(VALUE_SETS))
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
        assert labels["app.kubernetes.io/component"] in {"runtime", "model", "monitoring", "rollout"}


@pytest.mark.parametrize("values_set", list(VALUE_SETS))
def test_kserve_admits_and_runs_what_notes_print(
    rendered: dict[str, dict[str, Any]], values_set: str
) -> None:
    """Every runtime passes KServe's ServingRuntime webhook next to KServe's built-in runtimes
    (and the chart's other runtimes); every InferenceService passes KServe's mutating and
    validating webhooks of the release it targets, gets the runtime it names, and the pods
    KServe (or the chart's ScaledObject) will keep are the ones NOTES.txt prints."""
    release = rendered[values_set]
    kserve = KServe(RELEASE_OF[values_set])
    namespaced, cluster = install_runtimes(release["objects"], kserve)
    if values_set == "existing-runtime":  # the runtime another release installed
        existing = copy.deepcopy(objects_of(rendered["defaults"], "ServingRuntime"))
        for name, runtime in zip(
            ("shared-serving", "shared-serving-knative"), existing.values(), strict=True
        ):
            runtime["metadata"]["name"] = name
            namespaced.append(runtime)
    scaled = objects_of(release, "ScaledObject")
    for name, isvc in objects_of(release, "InferenceService").items():
        admitted = admit_isvc(isvc, kserve)
        _, selected = select_runtime(admitted, namespaced, cluster)
        assert selected == admitted["spec"]["predictor"]["model"]["runtime"], name
        line = notes_line(release, name)
        predictor = admitted["spec"]["predictor"]
        mode = admitted["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
        if mode in ("Knative", "Serverless"):
            low, high = predictor["minReplicas"], predictor["maxReplicas"]
        elif predictor_service(name) in scaled:  # the chart's own ScaledObject (class external)
            spec = scaled[predictor_service(name)]["spec"]
            low, high = spec["minReplicaCount"], spec["maxReplicaCount"]
            assert replica_plan(admitted, kserve).deployment_replicas is None, "KServe must not pin it"
        else:
            low, high = replica_plan(admitted, kserve).pods()
        pods = f"{low}..{high} pods" if low != high else f"{low} pod" + ("" if low == 1 else "s")
        shown = "Knative" if mode in ("Knative", "Serverless") else "Standard"
        assert f": {shown}, {pods}," in line, (line, low, high)


def test_notes_show_the_stable_minimum_during_a_standard_canary(rendered: dict[str, dict[str, Any]]) -> None:
    """For every Standard model whose minimum KServe would cut during a spec.canary[] rollout,
    NOTES print the stable minimum with a canary at 10 % and 50 %: the ported replica rule's
    floor for that very InferenceService with such a canary (KServe v0.20.0: every canary counts)."""
    release = rendered["all-modes"]
    notes = release["info"]["notes"]
    lines = {m[1]: m[0] for m in re.finditer(r"^  - (\S+): \d+ pods -> .*$", notes, re.MULTILINE)}
    assert set(lines) == {"cancer-xgb", "digits-mlp", "fixed"}  # not Knative, not a minimum of 1
    kserve = KServe("v0.20.0")
    for name, line in lines.items():
        isvc = objects_of(release, "InferenceService")[name]
        floors = []
        for percent in (10, 50):
            obj = copy.deepcopy(isvc)
            model = {
                **obj["spec"]["predictor"]["model"],
                "name": "kserve-container",
                "storageUri": "s3://m/v2",
            }
            obj["spec"]["canary"] = [
                {"trafficPercent": percent, "predictor": {"name": "canary", "model": model}}
            ]
            floors.append(stable_floor(admit_isvc(obj, kserve), kserve))
        low = stable_floor(admit_isvc(isvc, kserve), kserve)
        assert line == f"  - {name}: {low} pods -> {floors[0]} / {floors[1]}"
    assert lines["fixed"] == "  - fixed: 3 pods -> 2 / 1"
    assert "--keep-stable-capacity" in notes
    # spec.canary[] does not exist before KServe 0.20.0.
    assert "Capacity during a Standard-mode canary" not in rendered["kserve-v0.19.0"]["info"]["notes"]


def test_defaults_render_one_knative_model(rendered: dict[str, dict[str, Any]]) -> None:
    release = rendered["defaults"]
    runtimes = objects_of(release, "ServingRuntime")
    assert set(runtimes) == {"demo-serving", "demo-serving-knative"}
    (isvc,) = objects_of(release, "InferenceService").values()
    predictor = isvc["spec"]["predictor"]
    assert predictor["model"]["runtime"] == "demo-serving-knative"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    assert (predictor["scaleMetric"], predictor["scaleTarget"], predictor["containerConcurrency"]) == (
        "concurrency", DEFAULTS["autoscaling"]["knative"]["target"],
        DEFAULTS["autoscaling"]["knative"]["containerConcurrency"],
    )  # fmt: skip
    assert "iris-xgb" in release["info"]["notes"]


def test_all_modes(rendered: dict[str, dict[str, Any]]) -> None:
    release = rendered["all-modes"]
    isvcs = objects_of(release, "InferenceService")
    mode = {n: i["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] for n, i in isvcs.items()}
    assert mode == {"iris-xgb": "Knative", "cancer-onnx": "Knative", "cancer-xgb": "Standard",
                    "digits-mlp": "Standard", "fixed": "Standard", "single": "Standard"}  # fmt: skip
    assert isvcs["iris-xgb"]["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert isvcs["cancer-onnx"]["spec"]["predictor"]["scaleTarget"] == 4
    hpa = isvcs["cancer-xgb"]["spec"]["predictor"]
    assert (hpa["scaleMetric"], hpa["scaleTarget"]) == ("cpu", DEFAULTS["autoscaling"]["hpa"]["target"])
    assert hpa["model"]["runtime"] == "demo-serving"
    env = {e["name"]: e for e in hpa["model"]["env"]}
    assert env["SERVING_LOG_LEVEL"]["value"] == "debug"
    assert env["SERVING_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "cancer-admin", "key": "token"}
    assert hpa["model"]["resources"]["limits"]["cpu"] == "2"
    rule = next(iter(objects_of(release, "PrometheusRule").values()))
    assert rule["spec"]["groups"] == yaml.safe_load((FILES / "prometheus-rules.yaml").read_text())["groups"]
    dashboard = objects_of(release, "ConfigMap")["demo-serving-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["serving-dashboard.json"]) == json.loads(
        (FILES / "grafana-dashboard.json").read_text()
    )


def test_class_none_pins_min_replicas_and_gets_no_budget_for_one_pod(
    rendered: dict[str, dict[str, Any]],
) -> None:
    """``none`` is KServe's class none (v0.15.1+), which pins spec.replicas to minReplicas; a
    PodDisruptionBudget only where that leaves a spare pod."""
    release = rendered["all-modes"]
    isvcs = objects_of(release, "InferenceService")
    for name, pods, text in (("fixed", 3, "3 pods"), ("single", 1, "1 pod")):
        isvc = isvcs[name]
        assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "none"
        assert isvc["spec"]["predictor"]["minReplicas"] == isvc["spec"]["predictor"]["maxReplicas"] == pods
        plan = replica_plan(admit_isvc(isvc, KServe("v0.20.0")), KServe("v0.20.0"))
        assert plan.deployment_replicas == pods and plan.scaler is None
        assert f"Standard, {text}, fixed (autoscalerClass none)" in notes_line(release, name)
    assert set(objects_of(release, "PodDisruptionBudget")) == {
        "cancer-xgb-predictor", "digits-mlp-predictor", "fixed-predictor"
    }  # fmt: skip
    assert "PodDisruptionBudget" not in notes_line(release, "single")


def test_autoscaler_classes_follow_the_kserve_release(rendered: dict[str, dict[str, Any]]) -> None:
    """Before v0.15.1 there is no class none; v0.15.0 pins class external instead, older ones
    only an HPA with min = max holds the count. KEDA through KServe's own class from v0.15.0,
    through the chart's ScaledObject (class external) before. The mode names Standard/Knative
    from v0.16.0 (RawDeployment would get Knative's autoscaling rules there)."""
    expected = {
        "v0.14.0": ("RawDeployment", "hpa", "external"),
        "v0.15.0": ("RawDeployment", "external", "keda"),
        "v0.15.1": ("RawDeployment", "none", "keda"),
        "v0.16.0": ("Standard", "none", "keda"),
        "v0.20.0": ("Standard", "none", "keda"),
        "master": ("Standard", "none", "keda"),
    }
    for version, (mode, none_class, keda_class) in expected.items():
        release = rendered["all-modes" if version == "v0.20.0" else f"kserve-{version}"]
        isvcs = objects_of(release, "InferenceService")
        fixed, digits = isvcs["fixed"], isvcs["digits-mlp"]
        assert fixed["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == mode, version
        assert fixed["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == none_class, version
        assert digits["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == keda_class, version
        assert replica_plan(admit_isvc(fixed, KServe(version)), KServe(version)).pods() == (3, 3), version
        assert (predictor_service("digits-mlp") in objects_of(release, "ScaledObject")) == (
            keda_class == "external"
        ), version


def test_keda_through_kserve_uses_a_rate_query_on_the_stable_pods(
    rendered: dict[str, dict[str, Any]],
) -> None:
    release = rendered["all-modes"]
    assert objects_of(release, "ScaledObject") == {}
    predictor = objects_of(release, "InferenceService")["digits-mlp"]["spec"]["predictor"]
    (metric,) = predictor["autoScaling"]["metrics"]
    assert metric["type"] == "External"
    external = metric["external"]
    assert external["target"] == {"type": "Value", "value": "6"}
    assert external["metric"]["backend"] == "prometheus"
    assert external["metric"]["serverAddress"] == DEFAULTS["keda"]["prometheusServerAddress"]
    assert external["metric"]["query"] == (
        'sum(rate(serving_request_duration_seconds_sum{namespace="models", model="digits-mlp", '
        'pod=~"digits-mlp-predictor-[a-z0-9]+-[a-z0-9]+"}[1m]))'
    )
    assert "no fallback" in notes_line(release, "digits-mlp")


def test_keda_through_the_chart_has_a_fallback(rendered: dict[str, dict[str, Any]]) -> None:
    release = rendered["keda-chart"]
    isvcs = objects_of(release, "InferenceService")
    scaled = objects_of(release, "ScaledObject")
    assert set(scaled) == {"digits-mlp-predictor", "own-fallback-predictor"}
    for isvc in isvcs.values():
        assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "external"
        assert "autoScaling" not in isvc["spec"]["predictor"]
    digits = scaled["digits-mlp-predictor"]["spec"]
    assert digits["fallback"] == {"failureThreshold": 5, "replicas": 4}
    assert (digits["minReplicaCount"], digits["maxReplicaCount"]) == (2, 8)
    (trigger,) = digits["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    assert trigger["metadata"]["threshold"] == "6"
    assert trigger["metadata"]["query"].endswith('pod=~"digits-mlp-predictor-[a-z0-9]+-[a-z0-9]+"}[2m]))')
    own = scaled["own-fallback-predictor"]["spec"]
    assert own["fallback"]["replicas"] == 2 and own["triggers"][0]["metadata"]["threshold"] == "2.5"
    assert "4 pods if Prometheus fails 5 times" in notes_line(release, "digits-mlp")
    # Without keda.fallback.replicas, the fallback is the model's maxReplicas.
    all_chart = objects_of(rendered["kserve-v0.14.0"], "ScaledObject")["digits-mlp-predictor"]["spec"]
    assert all_chart["fallback"]["replicas"] == 8


def test_scalers_follow_a_standard_promotion(rendered: dict[str, dict[str, Any]]) -> None:
    """start -> promote -> start -> promote with the rollout CLI's own patches: every step is
    admitted, and the stable Deployment KServe runs is still the one the chart's ScaledObject
    (and KServe's own, named after the predictor) scales."""
    kserve = KServe("v0.20.0")
    for values_set, name in (
        ("keda-chart", "digits-mlp"),
        ("all-modes", "digits-mlp"),
        ("all-modes", "fixed"),
    ):
        release = rendered[values_set]
        isvc = admit_isvc(objects_of(release, "InferenceService")[name], kserve)
        target = predictor_service(name)
        scaled = objects_of(release, "ScaledObject")
        if target in scaled:
            assert scaled[target]["spec"]["scaleTargetRef"] == {
                "apiVersion": "apps/v1", "kind": "Deployment", "name": target,
            }  # fmt: skip
        for step in range(2):
            started = admit_isvc(
                merge_patch(isvc, standard_start_patch(isvc, f"pvc://m/v{step}", 10, DEFAULT_CANARY_NAME)),
                kserve,
                old=isvc,
            )
            isvc = admit_isvc(
                merge_patch(started, standard_promote_patch(started, None)), kserve, old=started
            )
            stable = predictor_service(name, isvc["spec"]["predictor"].get("name"))
            assert stable == target, (values_set, name, step)
            assert isvc["spec"]["predictor"]["model"]["storageUri"] == f"pvc://m/v{step}"


def test_monitoring_objects_carry_the_selector_labels(rendered: dict[str, dict[str, Any]]) -> None:
    release = rendered["all-modes"]
    monitors = objects_of(release, "PodMonitor")
    rules = objects_of(release, "PrometheusRule")
    assert set(monitors) == {"demo-serving", "demo-serving-queue-proxy"} and len(rules) == 1
    for obj in [*monitors.values(), *rules.values()]:
        assert obj["metadata"]["labels"]["release"] == "kube-prometheus-stack", obj["metadata"]["name"]
    assert next(iter(rules.values()))["metadata"]["labels"]["team"] == "ml"
    isvcs = objects_of(release, "InferenceService")
    ours = monitors["demo-serving"]["spec"]
    assert set(ours["selector"]["matchExpressions"][0]["values"]) == set(isvcs)
    assert {e["port"] for e in ours["podMetricsEndpoints"]} == {"http1", "user-port"}
    queue = monitors["demo-serving-queue-proxy"]["spec"]
    assert set(queue["selector"]["matchExpressions"][0]["values"]) == {"iris-xgb", "cancer-onnx"}
    (endpoint,) = queue["podMetricsEndpoints"]
    assert endpoint["port"] == "http-usermetric"
    assert {"targetLabel": "source", "replacement": "queue-proxy"} in endpoint["relabelings"]
    # Without Knative models there is no queue-proxy to scrape; without selector labels NOTES warns.
    assert set(objects_of(rendered["long-names"], "PodMonitor")) == {
        "demo-serving",
        "demo-serving-queue-proxy",
    }
    assert "monitoring.selectorLabels" in rendered["long-names"]["info"]["notes"]
    assert "monitoring.selectorLabels" not in release["info"]["notes"]


def test_pod_settings_reach_every_predictor(rendered: dict[str, dict[str, Any]]) -> None:
    release = rendered["pod-settings"]
    isvcs = objects_of(release, "InferenceService")
    iris = isvcs["iris-xgb"]["spec"]["predictor"]
    assert iris["serviceAccountName"] == "model-reader"
    assert iris["imagePullSecrets"] == [{"name": "regcred"}]
    assert iris["nodeSelector"] == POD_SETTINGS["nodeSelector"]
    assert iris["tolerations"] == POD_SETTINGS["tolerations"]
    assert iris["affinity"] == POD_SETTINGS["affinity"]
    assert iris["priorityClassName"] == "inference-critical"
    assert iris["annotations"] == {"sidecar.istio.io/inject": "false"}
    zone, host = iris["topologySpreadConstraints"]
    # A constraint without a selector spreads the model's own pods; an explicit one is kept.
    assert zone["labelSelector"] == {"matchLabels": {"serving.kserve.io/inferenceservice": "iris-xgb"}}
    assert host["labelSelector"] == {"matchLabels": {"team": "ml"}}
    cancer = isvcs["cancer-onnx"]["spec"]["predictor"]
    assert cancer["serviceAccountName"] == "other-reader"
    assert cancer["nodeSelector"] == {"pool": "gpu"}
    assert "tolerations" not in cancer  # the model's empty list replaces the release-wide one
    assert (cancer["priorityClassName"], cancer["annotations"]) == ("batch", {"a": "b"})
    assert cancer["imagePullSecrets"] == [{"name": "regcred"}]
    for runtime in objects_of(release, "ServingRuntime").values():
        security = runtime["spec"]["containers"][0]["securityContext"]
        assert (security["runAsUser"], security["runAsGroup"]) == (1000650000, 0)


def test_openshift_compatible_security_by_default(rendered: dict[str, dict[str, Any]]) -> None:
    """restricted-v2 assigns a UID from the namespace range and refuses a fixed one outside it:
    non-root without a UID, everything else that SCC requires."""
    for runtime in objects_of(rendered["defaults"], "ServingRuntime").values():
        security = runtime["spec"]["containers"][0]["securityContext"]
        assert security["runAsNonRoot"] is True
        assert "runAsUser" not in security and "runAsGroup" not in security
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    dockerfile = (ROOT / "Dockerfile").read_text()
    # runAsNonRoot without runAsUser needs a numeric USER in the image for the kubelet to check.
    assert re.search(r"^USER \$\{UID\}:0$", dockerfile, re.M) and re.search(
        r"^ARG UID=10001$", dockerfile, re.M
    )


def test_runtimes_are_not_auto_selected_unless_asked(rendered: dict[str, dict[str, Any]]) -> None:
    """An onnx/xgboost InferenceService of another team that names no runtime lands on KServe's
    own runtimes, not ours; with runtime.autoSelect it would land on ours."""
    kserve = KServe("v0.20.0")
    foreign: dict[str, Any] = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "theirs", "namespace": NAMESPACE, "annotations": {}},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "onnx"}, "protocolVersion": "v2",
                                         "storageUri": "s3://their/model.onnx"}}},
    }  # fmt: skip
    xgb = copy.deepcopy(foreign)
    xgb["spec"]["predictor"]["model"]["modelFormat"]["name"] = "xgboost"
    builtins = builtin_runtimes(kserve)
    ours = list(objects_of(rendered["defaults"], "ServingRuntime").values())
    for runtime in ours:
        assert not any(f["autoSelect"] for f in runtime["spec"]["supportedModelFormats"])
    assert select_runtime(admit_isvc(foreign, kserve), ours, builtins) == (
        "ClusterServingRuntime",
        "kserve-tritonserver",
    )
    assert select_runtime(admit_isvc(xgb, kserve), ours, builtins) == (
        "ClusterServingRuntime",
        "kserve-mlserver",
    )
    cluster = [*builtins, *objects_of(rendered["cluster-runtime"], "ClusterServingRuntime").values()]
    assert select_runtime(admit_isvc(foreign, kserve), [], cluster) == ("ClusterServingRuntime", "serving")
    assert select_runtime(admit_isvc(xgb, kserve), [], cluster) == ("ClusterServingRuntime", "serving")
    assert "auto-selected for onnx/xgboost" in rendered["cluster-runtime"]["info"]["notes"]
    # Where a platform also applied kserve-openvino (onnx at priority 2, not installed by default),
    # ours at priority 3 passes the webhook beside it and still wins; without ours, openvino does.
    with_ov = builtin_runtimes(kserve, openvino=True)
    (theirs,) = objects_of(rendered["cluster-runtime"], "ClusterServingRuntime").values()
    assert validate_runtime(theirs, with_ov, kserve) is None
    assert select_runtime(admit_isvc(foreign, kserve), [], [*with_ov, theirs])[1] == "serving"
    assert select_runtime(admit_isvc(foreign, kserve), ours, with_ov)[1] == "kserve-openvino"
    # The Knative variant is never auto-selected.
    (knative,) = [r for r in ours if r["metadata"]["name"].endswith("-knative")]
    assert knative["spec"]["supportedModelFormats"] == [
        {**f, "autoSelect": False}
        for f in objects_of(rendered["defaults"], "ServingRuntime")["demo-serving"]["spec"][
            "supportedModelFormats"
        ]
    ]


def test_knative_runtime_has_a_readiness_probe_only(rendered: dict[str, dict[str, Any]]) -> None:
    runtimes = objects_of(rendered["all-modes"], "ServingRuntime")
    (container,) = runtimes["demo-serving-knative"]["spec"]["containers"]
    assert "startupProbe" not in container and "livenessProbe" not in container
    # No periodSeconds: Knative's queue-proxy then probes every 50 ms until the pod is ready.
    assert container["readinessProbe"] == {
        "httpGet": {"path": "/v2/health/ready", "port": 8080},
        "successThreshold": 1,
    }
    (standard,) = runtimes["demo-serving"]["spec"]["containers"]
    assert {"readinessProbe", "livenessProbe", "startupProbe"} <= set(standard)


def test_every_derived_name_of_the_longest_model_name_fits(rendered: dict[str, dict[str, Any]]) -> None:
    """A 46-character name (the schema's maximum): Knative's first revision, a Standard-mode
    canary started with the rollout CLI's default name, and every object the chart names after
    the model are DNS labels of at most 63 characters; KServe admits the InferenceServices."""
    release = rendered["long-names"]
    knative_name, standard_name = LONGEST, LONGEST[:-1] + "s"
    derived = [
        f"{knative_name}-predictor-00001",  # Knative revision (and its Deployment's pod label)
        f"{knative_name}-predictor",  # the Knative Service and KServe's Services
        predictor_service(standard_name),
        predictor_service(standard_name, DEFAULT_CANARY_NAME),
    ] + [o["metadata"]["name"] for o in release["objects"]]
    label = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    assert [n for n in derived if len(n) > 63 or not label.match(n)] == []
    assert max(len(n) for n in derived) == 63
    for isvc in objects_of(release, "InferenceService").values():
        admit_isvc(isvc, KServe("v0.20.0"))
    too_long = {"models": [{"name": LONGEST + "x", "format": "onnx", "storageUri": "pvc://m"}]}
    errors = [e.message for e in jsonschema.Draft7Validator(SCHEMA).iter_errors(merged(too_long))]
    assert any("is too long" in e for e in errors), errors


def test_existing_runtime_is_named(rendered: dict[str, dict[str, Any]]) -> None:
    release = rendered["existing-runtime"]
    assert objects_of(release, "ServingRuntime") == {} and objects_of(release, "ClusterServingRuntime") == {}
    runtimes = {
        n: i["spec"]["predictor"]["model"]["runtime"]
        for n, i in objects_of(release, "InferenceService").items()
    }
    assert runtimes == {"a": "shared-serving-knative", "b": "shared-serving"}


def test_cluster_runtime_only_when_asked(rendered: dict[str, dict[str, Any]]) -> None:
    release = rendered["cluster-runtime"]
    assert set(objects_of(release, "ClusterServingRuntime")) == {"serving"}
    assert objects_of(release, "ServingRuntime") == {}
    runtime = objects_of(release, "ClusterServingRuntime")["serving"]
    assert "namespace" not in runtime["metadata"]
    assert all(f["autoSelect"] and f["priority"] == 3 for f in runtime["spec"]["supportedModelFormats"])
    isvc = objects_of(release, "InferenceService")["cancer-xgb"]
    assert isvc["spec"]["predictor"]["scaleTarget"] == 60
    assert isvc["spec"]["predictor"]["model"]["runtime"] == "serving"


BROKEN: list[tuple[dict[str, Any], str, str]] = [
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
    ({"models": [{"name": LONGEST + "x", "format": "onnx", "storageUri": "pvc://m"}]},
     "models/0/name", "is too long"),
    ({"kserve": {"version": "latest"}}, "kserve/version", "does not match"),
    ({"keda": {"owner": "keda"}}, "keda/owner", "'auto', 'kserve', 'chart'"),
    ({"keda": {"window": "60"}}, "keda/window", "does not match"),
    ({"imagePullSecrets": ["regcred"]}, "imagePullSecrets/0", "is not of type 'object'"),
    ({"topologySpreadConstraints": [{"maxSkew": 1}]}, "topologySpreadConstraints/0", "'topologyKey' is a required"),
    ({"runtime": {"securityContext": {"runAsUser": 0}}}, "runtime/securityContext/runAsUser", "less than the minimum of 1"),
    ({"monitoring": {"selectorLabels": {"release": 1}}}, "monitoring/selectorLabels/release", "is not of type 'string'"),
]  # fmt: skip


@pytest.mark.parametrize(("values", "path", "message"), BROKEN)
def test_schema_rejects_broken_values(values: dict[str, Any], path: str, message: str) -> None:
    errors = list(jsonschema.Draft7Validator(SCHEMA).iter_errors(merged(values)))
    described = [f"{'/'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in errors]
    assert any(d.startswith(f"{path}: ") and message in d for d in described), described


def test_schema_accepts_every_values_set_above() -> None:
    for values in VALUE_SETS.values():
        jsonschema.Draft7Validator(SCHEMA).validate(merged(values or {}))


TEMPLATE_REFUSALS: list[tuple[dict[str, Any], str]] = [
    ({"models": [{"name": "m", "format": "onnx", "storageUri": "pvc://m", "autoscaler": {"class": "hpa"},
                  "canaryTrafficPercent": 10}]},
     r"canaryTrafficPercent needs autoscaler\.class knative"),
    ({"models": [{"name": "m", "format": "onnx", "storageUri": "pvc://m", "minReplicas": 5, "maxReplicas": 2}]},
     r"minReplicas \(5\) is greater than maxReplicas \(2\)"),
    ({"models": [{"name": "m", "format": "onnx", "storageUri": "pvc://m", "minReplicas": 0,
                  "autoscaler": {"class": "keda"}}]},
     r"keda needs minReplicas >= 1: its metric comes from the model's own pods"),
    ({"kserve": {"version": "0.14.0"}, "keda": {"owner": "kserve"},
      "models": [{"name": "m", "format": "onnx", "storageUri": "pvc://m", "autoscaler": {"class": "keda"}}]},
     r"keda.owner kserve needs KServe >= 0.15.0"),
    ({"kserve": {"version": "0.15.0"}, "keda": {"owner": "chart"},
      "models": [{"name": "m", "format": "onnx", "storageUri": "pvc://m", "autoscaler": {"class": "keda"}}]},
     r"KServe 0.15.0 pins to minReplicas \(fighting KEDA\)"),
    ({"runtime": {"cluster": True, "autoSelect": True, "priority": 2}},
     r"runtime.priority 2 with autoSelect on a ClusterServingRuntime"),
    ({"runtime": {"create": False}}, r"runtime.create is false: set runtime.name"),
]  # fmt: skip


def test_helm_itself_enforces_the_schema_and_the_template_checks(tmp_path: Path) -> None:
    with pytest.raises(helm_sdkpy.InstallError) as exc:
        render(CHART, BROKEN[2][0], tmp_path)
    assert "at '/models/0/canaryTrafficPercent': maximum: got 150, want 100" in str(exc.value)
    with pytest.raises(helm_sdkpy.InstallError) as exc:
        render(CHART, BROKEN[0][0], tmp_path)
    assert "at '/models/0/format': value must be one of 'onnx', 'xgboost', 'lightgbm'" in str(exc.value)
    with pytest.raises(helm_sdkpy.InstallError) as exc:
        render(CHART, BROKEN[6][0], tmp_path)
    assert "at '/models/0/name': maxLength: got 47, want 46" in str(exc.value)
    for values, message in TEMPLATE_REFUSALS:
        with pytest.raises(helm_sdkpy.InstallError, match=message):
            render(CHART, values, tmp_path)


def test_chart_runtime_matches_the_manifest(rendered: dict[str, dict[str, Any]]) -> None:
    """The chart and manifests/ install the same container (args, env, ports, probes, security)."""
    runtimes = objects_of(rendered["defaults"], "ServingRuntime")
    manifest = yaml.safe_load((ROOT / "manifests" / "runtime" / "servingruntime.yaml").read_text())["spec"]
    assert runtimes["demo-serving"]["spec"] == manifest
    knative = yaml.safe_load((ROOT / "manifests" / "runtime" / "servingruntime-knative.yaml").read_text())
    assert runtimes["demo-serving-knative"]["spec"] == knative["spec"]


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
    assert f"the same **{keda['target']}** requests in flight per pod" in docs
    assert f"**HPA CPU target** = **{hpa['target']} %**" in docs
    isvcs = [
        d for d in yaml.safe_load_all((ROOT / "manifests" / "knative" / "inferenceservices.yaml").read_text())
    ]
    assert {i["spec"]["predictor"]["scaleTarget"] for i in isvcs} == {knative["target"]}
    keda_file = (ROOT / "manifests" / "raw" / "digits-mlp-keda.yaml").read_text()
    isvc = next(d for d in yaml.safe_load_all(keda_file) if d["kind"] == "InferenceService")
    (metric,) = isvc["spec"]["predictor"]["autoScaling"]["metrics"]
    assert metric["external"]["target"]["value"] == str(keda["target"])


def promtool_test(
    tmp_path: Path, records: dict[str, str], series: dict[str, str], expected: dict[str, list[Obj]]
) -> None:
    """Evaluate PromQL ``records`` (name -> expression) over synthetic ``series`` (15 s apart)
    with promtool's rule unit tests and check each record's samples at 5 minutes."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (scripts/test.sh installs Debian's prometheus package)")
    rules = {"groups": [{"name": "t", "rules": [{"record": k, "expr": v} for k, v in records.items()]}]}
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    test = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "15s",
        "tests": [{
            "interval": "15s",
            "input_series": [{"series": k, "values": v} for k, v in series.items()],
            "promql_expr_test": [
                {"expr": name, "eval_time": "5m", "exp_samples": samples} for name, samples in expected.items()
            ],
        }],
    }  # fmt: skip
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test))
    result = subprocess.run(
        [promtool, "test", "rules", "test.yaml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_keda_query_is_littles_law_over_the_stable_pods(
    rendered: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """45 s of request time per 15 s is 3 requests in flight on average; a canary's pods and the
    same model in another namespace do not count."""
    predictor = objects_of(rendered["all-modes"], "InferenceService")["digits-mlp"]["spec"]["predictor"]
    query = predictor["autoScaling"]["metrics"][0]["external"]["metric"]["query"]
    chart_query = objects_of(rendered["keda-chart"], "ScaledObject")["digits-mlp-predictor"]
    base = 'serving_request_duration_seconds_sum{namespace="models", model="digits-mlp", version="1", protocol="rest", '
    series = {
        base + 'pod="digits-mlp-predictor-7d9f8c6b5-abcde"}': "0+45x40",
        base + 'pod="digits-mlp-predictor-7d9f8c6b5-fghij"}': "0+60x40",
        base + 'pod="digits-mlp-canary-predictor-5b7c9d8f6-zzzzz"}': "0+150x40",
        base.replace('"models"', '"other"') + 'pod="digits-mlp-predictor-6c8d7e9f5-abcde"}': "0+150x40",
    }
    promtool_test(
        tmp_path,
        {"keda:kserve": query, "keda:chart": chart_query["spec"]["triggers"][0]["metadata"]["query"]},
        series,
        {
            "keda:kserve": [{"labels": "keda:kserve", "value": 7}],
            "keda:chart": [{"labels": "keda:chart", "value": 7}],
        },
    )


def test_dashboard_shows_queue_proxy_503s_beside_ours(tmp_path: Path) -> None:
    """The panel's queries, with Grafana's variables filled in, over both generations of
    Knative's queue-proxy metrics and our own counters."""
    dashboard = json.loads((FILES / "grafana-dashboard.json").read_text())
    (panel,) = [
        p for p in dashboard["panels"] if p.get("title") == "503s: Knative queue-proxy beside the server"
    ]
    exprs = {
        f"panel:{t['refId']}": t["expr"].replace("$model", ".*").replace("$__rate_interval", "1m")
        for t in panel["targets"]
    }
    queue = 'source="queue-proxy", namespace="models"'
    series = {
        f'revision_request_count{{{queue}, inferenceservice="iris-xgb", response_code="503", response_code_class="5xx"}}': "0+30x40",
        f'revision_request_count{{{queue}, inferenceservice="iris-xgb", response_code="200", response_code_class="2xx"}}': "0+900x40",
        f'http_server_request_duration_seconds_count{{{queue}, inferenceservice="cancer-onnx", http_response_status_code="503"}}': "0+15x40",
        f'http_server_request_duration_seconds_count{{{queue}, inferenceservice="cancer-onnx", http_response_status_code="200"}}': "0+900x40",
        'serving_rejections_total{model="iris-xgb", reason="overload"}': "0+15x40",
        'serving_rejections_total{model="iris-xgb", reason="invalid"}': "0+15x40",
        'serving_requests_total{model="iris-xgb", version="1", variant="stable", protocol="rest", outcome="5xx"}': "0+15x40",
        'serving_requests_total{model="iris-xgb", version="1", variant="stable", protocol="rest", outcome="2xx"}': "0+900x40",
    }  # fmt: skip
    promtool_test(
        tmp_path,
        exprs,
        series,
        {
            "panel:A": [
                {"labels": 'panel:A{inferenceservice="iris-xgb"}', "value": 2},
                {"labels": 'panel:A{inferenceservice="cancer-onnx"}', "value": 1},
            ],
            "panel:B": [{"labels": 'panel:B{model="iris-xgb"}', "value": 1}],
            "panel:C": [{"labels": 'panel:C{model="iris-xgb"}', "value": 1}],
        },
    )
    row = next(p for p in dashboard["panels"] if p["type"] == "row" and p["title"] == "Traffic and errors")
    assert panel["gridPos"]["y"] > row["gridPos"]["y"]

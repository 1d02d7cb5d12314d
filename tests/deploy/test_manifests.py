"""manifests/: every object valid against the Kubernetes schemas and KServe's own CRDs, accepted by
KServe's admission rules (tests/deploy/kserve_rules.py) for every release the manifests target,
and the pieces consistent with each other (runtimes, InferenceServices, autoscalers, monitoring)."""

from __future__ import annotations

import copy
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.deploy.installed import install_runtimes
from tests.deploy.k8s_schemas import load_kustomization, validate_object
from tests.deploy.kserve_rules import (
    RELEASES,
    KServe,
    admit_isvc,
    replica_plan,
    select_runtime,
)
from tests.deploy.render_manifests import PROMETHEUS_RULE, RULES, prometheus_rule_yaml
from tests.server_process import ROOT

MANIFESTS = ROOT / "manifests"
# The manifests spell the modes Standard/Knative, which KServe knows from v0.16.0.
TARGETS = [KServe(r) for r in RELEASES if KServe(r).at_least("v0.16.0")]


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return load_kustomization(MANIFESTS)


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def test_every_yaml_file_is_in_the_kustomization(objects: list[dict[str, Any]]) -> None:
    listed = set()
    for kustomization in MANIFESTS.rglob("kustomization.yaml"):
        doc = yaml.safe_load(kustomization.read_text())
        listed |= {(kustomization.parent / r).resolve() for r in doc.get("resources", [])}
    plain = {"kustomization.yaml", "kustomizeconfig.yaml", "prometheus-rules.yaml"}
    files = {p.resolve() for p in MANIFESTS.rglob("*.yaml") if p.name not in plain}
    assert files - listed == set(), "manifests not listed in any kustomization.yaml"


def test_every_object_is_valid(objects: list[dict[str, Any]]) -> None:
    kinds = {o["kind"] for o in objects}
    assert {"ServingRuntime", "ClusterServingRuntime", "InferenceService", "PodDisruptionBudget"} <= kinds
    assert {"PodMonitor", "PrometheusRule", "ConfigMap"} <= kinds
    problems = [p for o in objects for p in validate_object(o)]
    assert problems == []


def test_validation_catches_a_misspelt_field(objects: list[dict[str, Any]]) -> None:
    isvc = copy.deepcopy(next(iter(by_kind(objects, "InferenceService").values())))
    isvc["spec"]["predictor"]["scaleTarget"] = "eight"
    isvc["spec"]["predictor"]["model"]["storageUrl"] = "pvc://x"
    problems = validate_object(isvc)
    assert any("scaleTarget" in p and "not of type 'integer'" in p for p in problems), problems
    assert any("'storageUrl' was unexpected" in p for p in problems), problems
    pdb = copy.deepcopy(next(iter(by_kind(objects, "PodDisruptionBudget").values())))
    pdb["spec"]["maxUnavailble"] = 1
    assert any("maxUnavailble" in p for p in validate_object(pdb))


def test_runtime_spec(objects: list[dict[str, Any]]) -> None:
    runtime = by_kind(objects, "ServingRuntime")["serving-runtime"]["spec"]
    (container,) = runtime["containers"]
    assert container["name"] == "kserve-container"
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [("http1", 8080), ("h2c", 8081)]
    assert set(runtime["protocolVersions"]) == {"v1", "v2", "grpc-v2"}
    formats = {f["name"]: f for f in runtime["supportedModelFormats"]}
    assert set(formats) == {"onnx", "xgboost", "lightgbm"}
    # Never auto-selected; priority 3 clashes with none of KServe's runtimes if it is turned on.
    assert all(f["autoSelect"] is False and f["priority"] == 3 for f in formats.values())
    security = container["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert "runAsUser" not in security  # OpenShift's restricted-v2 assigns one
    assert security["capabilities"]["drop"] == ["ALL"]
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == 8080
    assert container["resources"]["requests"]["cpu"] == container["resources"]["limits"]["cpu"]


def test_runtime_variants_match(objects: list[dict[str, Any]]) -> None:
    main = by_kind(objects, "ServingRuntime")["serving-runtime"]["spec"]
    assert by_kind(objects, "ClusterServingRuntime")["serving-runtime"]["spec"] == main
    knative = copy.deepcopy(by_kind(objects, "ServingRuntime")["serving-runtime-knative"]["spec"])
    # Knative routes one port: the variant lists HTTP only, no grpc-v2, and is chosen by name.
    assert [p["containerPort"] for p in knative["containers"][0]["ports"]] == [8080]
    assert "grpc-v2" not in knative["protocolVersions"]
    assert not any(f["autoSelect"] for f in knative["supportedModelFormats"])
    # Readiness only (no startupProbe for Knative < 1.15, no liveness to kill a slow model
    # load), without periodSeconds so that the queue-proxy probes it every 50 ms at start-up.
    probe = {"httpGet": {"path": "/v2/health/ready", "port": 8080}, "successThreshold": 1}
    assert {k: v for k, v in knative["containers"][0].items() if k.endswith("Probe")} == {
        "readinessProbe": probe
    }
    expected = copy.deepcopy(main)
    expected["containers"][0]["ports"] = expected["containers"][0]["ports"][:1]
    expected["protocolVersions"] = [v for v in expected["protocolVersions"] if v != "grpc-v2"]
    for key in ("livenessProbe", "startupProbe"):
        del expected["containers"][0][key]
    expected["containers"][0]["readinessProbe"] = probe
    assert knative == expected


def test_inference_services_use_the_right_runtime_and_autoscaler(objects: list[dict[str, Any]]) -> None:
    runtimes = by_kind(objects, "ServingRuntime")
    isvcs = by_kind(objects, "InferenceService")
    assert set(isvcs) == {"iris-xgb", "cancer-onnx", "cancer-xgb", "digits-mlp"}
    for name, isvc in isvcs.items():
        mode = isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
        predictor = isvc["spec"]["predictor"]
        runtime = predictor["model"]["runtime"]
        assert runtime in runtimes, name
        assert predictor["model"]["modelFormat"]["name"] in {
            f["name"] for f in runtimes[runtime]["spec"]["supportedModelFormats"]
        }
        if mode == "Knative":
            assert runtime == "serving-runtime-knative", name
            assert predictor["scaleMetric"] == "concurrency"
            assert 0 < predictor["scaleTarget"] <= predictor["containerConcurrency"]
        else:
            assert mode == "Standard" and runtime == "serving-runtime", name
    assert isvcs["iris-xgb"]["spec"]["predictor"]["canaryTrafficPercent"] == 10
    hpa = isvcs["cancer-xgb"]
    assert hpa["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "hpa"
    assert hpa["spec"]["predictor"]["scaleMetric"] == "cpu"
    # KEDA through KServe's own class: KServe creates and owns the ScaledObject.
    keda = isvcs["digits-mlp"]
    assert keda["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
    (metric,) = keda["spec"]["predictor"]["autoScaling"]["metrics"]
    query = metric["external"]["metric"]["query"]
    assert query.startswith("sum(rate(serving_request_duration_seconds_sum{")
    assert 'model="digits-mlp", pod=~"digits-mlp-predictor-[a-z0-9]+-[a-z0-9]+"}[1m]))' in query
    assert "ScaledObject" not in {o["kind"] for o in objects}


def test_disruption_budgets_cover_standard_models_with_spare_pods(objects: list[dict[str, Any]]) -> None:
    isvcs = by_kind(objects, "InferenceService")
    pdbs = by_kind(objects, "PodDisruptionBudget")
    covered = {
        p["spec"]["selector"]["matchLabels"]["serving.kserve.io/inferenceservice"] for p in pdbs.values()
    }
    expected = {
        name
        for name, isvc in isvcs.items()
        if isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
        and isvc["spec"]["predictor"]["minReplicas"] >= 2
    }
    assert covered == expected == {"cancer-xgb", "digits-mlp"}


def test_monitoring_objects_carry_the_observability_files(objects: list[dict[str, Any]]) -> None:
    assert PROMETHEUS_RULE.read_text() == prometheus_rule_yaml(), (
        "manifests/monitoring/prometheusrule.yaml is stale: run python -m tests.deploy.render_manifests"
    )
    rule = by_kind(objects, "PrometheusRule")["serving"]
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    dashboard = by_kind(objects, "ConfigMap")["serving-grafana-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    chart_dashboard = ROOT / "charts" / "serving" / "files" / "grafana-dashboard.json"
    assert dashboard["data"]["grafana-dashboard.json"] == chart_dashboard.read_text()
    monitor = by_kind(objects, "PodMonitor")["serving"]["spec"]
    assert {e["port"] for e in monitor["podMetricsEndpoints"]} == {"http1", "user-port"}
    assert all(e["path"] == "/metrics" for e in monitor["podMetricsEndpoints"])
    (queue,) = by_kind(objects, "PodMonitor")["serving-queue-proxy"]["spec"]["podMetricsEndpoints"]
    assert (queue["port"], queue["path"]) == ("http-usermetric", "/metrics")
    assert {"targetLabel": "source", "replacement": "queue-proxy"} in queue["relabelings"]


def test_every_object_has_the_standard_labels(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/name") == "serving", obj["metadata"]["name"]
        assert labels.get("app.kubernetes.io/part-of") == "serving"
        assert labels.get("app.kubernetes.io/component")


def test_kustomize_builds_the_same_objects(objects: list[dict[str, Any]]) -> None:
    """The real kustomize (kubectl's) renders what the loader above reads, and it is all valid."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: kustomize build not checked (the loader above still is)")
    built = subprocess.run(
        [kubectl, "kustomize", str(MANIFESTS)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    docs = [d for d in yaml.safe_load_all(built) if d]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == sorted(
        (o["kind"], o["metadata"]["name"]) for o in objects
    )
    assert [p for d in docs for p in validate_object(d)] == []
    images = {c["image"] for d in docs if "Runtime" in d["kind"] for c in d["spec"]["containers"]}
    assert images == {"serving:0.1.0"}


@pytest.mark.parametrize("kserve", TARGETS, ids=lambda k: k.version)
def test_kserve_admits_every_object(objects: list[dict[str, Any]], kserve: KServe) -> None:
    """Runtimes through KServe's ServingRuntime webhook (the ClusterServingRuntime next to KServe's
    built-ins), InferenceServices through its mutating and validating webhooks; each gets the
    runtime it names, and the Standard-mode ones the pods their comments promise."""
    namespaced, cluster = install_runtimes(objects, kserve)
    pods = {}
    for name, isvc in by_kind(objects, "InferenceService").items():
        admitted = admit_isvc(isvc, kserve)
        assert (
            select_runtime(admitted, namespaced, cluster)[1] == isvc["spec"]["predictor"]["model"]["runtime"]
        )
        if admitted["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard":
            pods[name] = replica_plan(admitted, kserve).pods()
    assert pods == {"cancer-xgb": (2, 6), "digits-mlp": (2, 8)}


def test_runtimes_capture_no_other_model(objects: list[dict[str, Any]]) -> None:
    """Another team's onnx/xgboost InferenceService that names no runtime gets KServe's own."""
    kserve = KServe("v0.20.0")
    namespaced, cluster = install_runtimes(objects, kserve)
    for fmt, expected in (("onnx", "kserve-tritonserver"), ("xgboost", "kserve-mlserver")):
        foreign = {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {"name": "theirs", "annotations": {}},
            "spec": {"predictor": {"model": {"modelFormat": {"name": fmt}, "protocolVersion": "v2",
                                             "storageUri": "s3://their/model"}}},
        }  # fmt: skip
        assert select_runtime(admit_isvc(foreign, kserve), namespaced, cluster) == (
            "ClusterServingRuntime", expected,
        )  # fmt: skip

"""The ported KServe rules (tests/deploy/kserve_rules.py) refuse what KServe refuses and decide
what KServe decides: each case below is one KServe would meet, with KServe's own outcome."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.deploy.kserve_rules import (
    SUPPORTED,
    KServe,
    Refused,
    admit_isvc,
    builtin_runtimes,
    canary_replicas,
    canary_weights,
    default_isvc,
    ingress_config,
    replica_plan,
    select_runtime,
    stable_floor,
    stable_min_replicas,
    supporting_runtimes,
    validate_runtime,
)

MASTER, V20 = KServe("master"), KServe("v0.20.0")


def isvc(mode: str = "Standard", **predictor: Any) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": "iris",
            "namespace": "models",
            "annotations": {"serving.kserve.io/deploymentMode": mode},
        },
        "spec": {
            "predictor": {
                "model": {
                    "modelFormat": {"name": "xgboost"},
                    "protocolVersion": "v2",
                    "storageUri": "s3://m/v1",
                },
                **predictor,
            }
        },
    }


def canary(name: str = "canary", percent: int = 10, uri: str = "s3://m/v2", **extra: Any) -> dict[str, Any]:
    model = {"name": "kserve-container", "modelFormat": {"name": "xgboost"}, "storageUri": uri}
    return {"trafficPercent": percent, "predictor": {"name": name, "model": model, **extra}}


def refusal(obj: dict[str, Any], kserve: KServe, old: dict[str, Any] | None = None) -> str | None:
    try:
        admit_isvc(obj, kserve, old)
    except Refused as exc:
        return str(exc)
    return None


def test_versions_are_ordered_and_unknown_ones_refused() -> None:
    assert KServe("v0.15.1") < KServe("v0.16.0") < MASTER
    assert V20.at_least("v0.15.1") and not KServe("v0.15.0").at_least("v0.15.1")
    with pytest.raises(ValueError, match="no rules read"):
        KServe("v0.21.0")


def test_container_name_in_stable_predictor_is_refused_from_v0_16() -> None:
    obj = isvc()
    obj["spec"]["predictor"]["model"]["name"] = "kserve-container"
    assert refusal(obj, KServe("v0.15.1")) is None
    for version in ("v0.16.0", "v0.20.0", "master"):
        assert refusal(obj, KServe(version)) == "the 'name' field is not allowed in standard predictor"
    framework = isvc()
    framework["spec"]["predictor"] = {"xgboost": {"name": "c", "storageUri": "s3://m"}}
    assert refusal(framework, MASTER) == "the 'name' field is not allowed in standard predictor"


def test_canary_rules() -> None:
    obj = isvc(name="canary")
    obj["spec"]["canary"] = [canary("canary")]
    assert refusal(obj, V20) == 'canary predictor.name "canary" conflicts with stable predictor name'
    obj = isvc()
    obj["spec"]["canary"] = [canary("a", 60), canary("b", 50)]
    assert refusal(obj, V20) == "sum of canary trafficPercent values (110) must be <= 100"
    obj["spec"]["canary"] = [canary("a", 10, maxReplicas=3)]
    assert refusal(obj, V20) == 'canary "a" must not set maxReplicas (canary uses fixed replicas)'
    obj["spec"]["canary"] = [canary("a", 10, minReplicas=3)]
    assert refusal(obj, V20) == 'canary "a" minReplicas (3) must not exceed stable predictor minReplicas (1)'
    obj["spec"]["canary"] = [canary("a"), canary("a")]
    assert refusal(obj, V20) == 'canary predictor.name "a" is duplicated'
    obj["spec"]["canary"] = [canary("a")]
    assert refusal(obj, V20) is None
    # The deprecated spelling is rewritten to Standard before validation (v0.17.0+) ...
    legacy = copy.deepcopy(obj)
    legacy["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] = "RawDeployment"
    assert refusal(legacy, V20) is None
    assert (
        admit_isvc(legacy, V20)["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    )
    # ... but Knative mode has no spec.canary.
    knative = copy.deepcopy(obj)
    knative["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] = "Serverless"
    assert refusal(knative, V20) == "canary is only supported in Standard deployment mode"


def test_update_rules() -> None:
    old = isvc()
    old["status"] = {"deploymentMode": "RawDeployment"}
    renamed = isvc(name="v2")
    assert refusal(renamed, V20, old) == "predictor.name change requires a model change (e.g. storageUri)"
    renamed["spec"]["predictor"]["model"]["storageUri"] = "s3://m/v2"
    assert refusal(renamed, V20, old) is None
    assert refusal(isvc(name="v2"), KServe("v0.19.0"), old) is None  # the rule is new in v0.20.0
    moved = isvc("Serverless")
    assert (
        refusal(moved, V20, old)
        == "update rejected: deploymentMode cannot be changed from 'Standard' to 'Knative'"
    )


def test_autoscaler_classes_by_release() -> None:
    obj = isvc(minReplicas=3)
    obj["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] = "none"
    assert refusal(obj, KServe("v0.15.0")) == "[none] is not a supported autoscaler class type"
    assert refusal(obj, KServe("v0.15.1")) is None
    assert replica_plan(obj, KServe("v0.15.1")).pods() == (3, 3)
    obj["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] = "external"
    assert replica_plan(obj, KServe("v0.15.0")).deployment_replicas == 3  # pinned, fought KEDA
    assert replica_plan(obj, V20).pods() == (1, 1)  # left unset: Kubernetes starts it at 1
    obj["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] = "hpa"
    obj["spec"]["predictor"]["maxReplicas"] = 6
    plan = replica_plan(obj, V20)
    assert (plan.scaler, plan.pods()) == ("HorizontalPodAutoscaler", (3, 6))


def test_hpa_cpu_metric_on_raw_deployment_is_refused_by_v0_16_only() -> None:
    obj = isvc("RawDeployment", scaleMetric="cpu", scaleTarget=70)
    obj["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] = "hpa"
    assert refusal(obj, KServe("v0.16.0")) == "[cpu] is not a supported metric"
    for version in ("v0.15.1", "v0.17.0", "v0.20.0"):
        assert refusal(obj, KServe(version)) is None
    obj["spec"]["predictor"]["scaleTarget"] = 170
    assert refusal(obj, V20) == "the target utilization percentage should be a [1-100] integer"
    del obj["spec"]["predictor"]["scaleMetric"]
    obj["spec"]["predictor"]["scaleTarget"] = 70
    assert refusal(obj, KServe("v0.16.0")) is None


def test_replica_and_logger_and_env_checks() -> None:
    assert (
        refusal(isvc(minReplicas=5, maxReplicas=2), V20) == "'MinReplicas' cannot be greater than MaxReplicas"
    )
    obj = isvc()
    obj["spec"]["predictor"]["model"]["env"] = [{"name": "PYTHONPATH", "value": "/x"}]
    assert refusal(obj, KServe("v0.17.0")) is None
    assert "PYTHONPATH" in (refusal(obj, KServe("v0.18.0")) or "")
    bad = isvc()
    bad["metadata"]["name"] = "9lives"
    assert "a InferenceService name must consist of lower case" in (refusal(bad, V20) or "")


def runtime(
    name: str, kind: str = "ServingRuntime", created: str = "2026-01-01T00:00:00Z", **spec: Any
) -> dict[str, Any]:
    spec.setdefault("protocolVersions", ["v2", "v1"])
    return {
        "kind": kind,
        "metadata": {"name": name, "namespace": "models", "creationTimestamp": created},
        "spec": spec,
    }


def ours(auto: bool | None, priority: int = 2, kind: str = "ClusterServingRuntime") -> dict[str, Any]:
    formats = []
    for name, version in (("onnx", "1"), ("xgboost", "2")):
        fmt: dict[str, Any] = {"name": name, "version": version, "priority": priority}
        if auto is not None:
            fmt["autoSelect"] = auto
        formats.append(fmt)
    return runtime("serving", kind, protocolVersions=["v2", "v1", "grpc-v2"], supportedModelFormats=formats)


def test_cluster_runtime_priority_collision_is_refused() -> None:
    builtins = builtin_runtimes(V20)
    assert validate_runtime(ours(True, 2), builtins, V20) == (
        "same priority assigned for the model format xgboost in the clusterservingruntimes kserve-mlserver and serving"
    )
    assert validate_runtime(ours(True, 1), builtins, V20) == (
        "same priority assigned for the model format onnx in the clusterservingruntimes kserve-tritonserver and serving"
    )
    assert validate_runtime(ours(True, 5), builtins, V20) is None
    assert validate_runtime(ours(False, 2), builtins, V20) is None  # only autoSelect formats count
    assert validate_runtime(ours(True, 2, "ServingRuntime"), [], V20) is None  # none to clash with


@pytest.mark.parametrize("version", SUPPORTED)
def test_onnx_without_runtime_picks_ours_only_with_auto_select(version: str) -> None:
    kserve = KServe(version)
    model = {"modelFormat": {"name": "onnx"}, "protocolVersion": "v2", "storageUri": "s3://m"}
    obj = isvc(model=model)
    cluster = builtin_runtimes(kserve)
    for auto in (None, False):
        assert select_runtime(obj, [], [*cluster, ours(auto)]) == (
            "ClusterServingRuntime",
            "kserve-tritonserver",
        )
        assert select_runtime(obj, [ours(auto, kind="ServingRuntime")], cluster)[1] == "kserve-tritonserver"
    assert select_runtime(obj, [], [*cluster, ours(True)]) == ("ClusterServingRuntime", "serving")
    # Namespaced runtimes come first whatever their priority.
    assert select_runtime(obj, [ours(True, 0, "ServingRuntime")], cluster) == ("ServingRuntime", "serving")
    # Without protocolVersion the model is v1, which Triton does not serve.
    v1 = isvc(model={"modelFormat": {"name": "onnx"}, "storageUri": "s3://m"})
    with pytest.raises(Refused, match="no runtime found to support predictor with model type"):
        select_runtime(v1, [], [*cluster, ours(False)])
    assert select_runtime(v1, [], [*cluster, ours(True)])[1] == "serving"


def test_named_runtime_and_tie_break() -> None:
    named = isvc(model={"modelFormat": {"name": "onnx"}, "runtime": "serving", "protocolVersion": "v2"})
    assert select_runtime(named, [], [ours(False)]) == ("ClusterServingRuntime", "serving")
    grpc_only = runtime("serving", "ClusterServingRuntime", protocolVersions=["grpc-v2"],
                        supportedModelFormats=[{"name": "onnx", "version": "1"}])  # fmt: skip
    with pytest.raises(Refused, match="does not support specified protocol version"):
        select_runtime(named, [], [grpc_only])
    with pytest.raises(Refused, match="No ServingRuntimes or ClusterServingRuntimes with the name: serving"):
        select_runtime(named, [], [])
    versioned = isvc(model={"modelFormat": {"name": "onnx", "version": "2"}, "runtime": "serving"})
    with pytest.raises(Refused, match="does not support specified framework/version"):
        select_runtime(versioned, [], [ours(False)])
    fmt = [{"name": "onnx", "autoSelect": True, "priority": 1}]
    old = runtime("old", created="2025-01-01T00:00:00Z", supportedModelFormats=fmt)
    new = runtime("new", created="2026-06-01T00:00:00Z", supportedModelFormats=fmt)
    none = runtime(
        "none", created="2027-01-01T00:00:00Z", supportedModelFormats=[{"name": "onnx", "autoSelect": True}]
    )
    model = {"modelFormat": {"name": "onnx"}, "protocolVersion": "v2"}
    assert [n for _, n in supporting_runtimes(model, [old, none, new], [])] == ["new", "old", "none"]


def test_canary_split_exists_on_master_with_gateway_api_only() -> None:
    obj = isvc()
    obj["spec"]["canary"] = [canary("canary", 20)]
    obj["status"] = {"canaryStatuses": [{"name": "canary", "ready": True, "trafficPercent": 20}]}
    gateway = ingress_config(True)
    assert canary_weights(obj, MASTER, gateway) == {"iris-predictor": 80, "iris-canary-predictor": 20}
    assert canary_weights(obj, V20, gateway) is None
    assert canary_weights(obj, MASTER, ingress_config(False)) is None
    assert canary_weights(obj, MASTER, ingress_config(True, disableIngressCreation=True)) is None
    obj["status"]["canaryStatuses"][0]["ready"] = False
    assert canary_weights(obj, MASTER, gateway) == {"iris-predictor": 100}


def rollout_step(obj: dict[str, Any], percent: int, ready: bool) -> dict[str, Any]:
    """The InferenceService with one canary at ``percent``, as KServe's controller reports it."""
    out = copy.deepcopy(obj)
    out["spec"]["canary"] = [canary("canary", percent)]
    out["status"] = {"canaryStatuses": [{"name": "canary", "ready": ready, "trafficPercent": percent}]}
    return out


@pytest.mark.parametrize("klass", ["hpa", "none", "keda"])
def test_stable_floor_during_a_standard_rollout(klass: str) -> None:
    """A stable predictor sized at 4 pods loses the canary's replicas for the whole rollout:
    v0.20.0 cuts as soon as the canary is in the spec, master only once it is ready; canary
    replicas are ceil(4 x percent / 100) (its own minReplicas when set); never below 1."""
    obj = isvc(minReplicas=4, maxReplicas=8)
    obj["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] = klass
    assert stable_floor(admit_isvc(obj, V20), V20) == stable_floor(obj, MASTER) == 4
    steps = [(10, False), (10, True), (25, True), (50, True), (75, True), (100, True)]
    v20, master = [], []
    for percent, ready in steps:
        step = rollout_step(obj, percent, ready)
        admit_isvc(step, V20)  # KServe accepts every step
        v20.append(stable_floor(step, V20))
        master.append(stable_floor(step, MASTER))
    assert v20 == [3, 3, 3, 2, 1, 1]
    assert master == [4, 3, 3, 2, 1, 1]
    assert [canary_replicas(obj, canary(percent=p)) for p, _ in steps] == [1, 1, 1, 2, 3, 4]
    plan = replica_plan(rollout_step(obj, 50, True), MASTER)
    if klass == "none":
        assert (plan.deployment_replicas, plan.pods()) == (2, (2, 2))
    else:
        assert plan.deployment_replicas is None and plan.pods() == (2, 8)  # the maximum stays
    # A canary's own minReplicas is what it takes; KServe releases before v0.20.0 have no canaries.
    pinned = rollout_step(obj, 10, True)
    pinned["spec"]["canary"][0]["predictor"]["minReplicas"] = 3
    assert stable_min_replicas(pinned, MASTER) == 1
    assert stable_min_replicas(pinned, KServe("v0.19.0")) == 4


def test_no_cut_without_a_stable_minimum_and_the_v0_20_floor_of_one() -> None:
    unset = rollout_step(isvc(), 50, True)
    assert stable_min_replicas(unset, V20) is None and stable_floor(unset, MASTER) == 1
    zero = rollout_step(isvc(minReplicas=0), 50, False)
    zero["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] = "keda"
    # v0.20.0 applies max(min - canaries, 1) whatever the canaries add up to; master only cuts
    # when a ready canary has replicas, so a KEDA minimum of 0 stays 0 there.
    assert stable_min_replicas(zero, V20) == 1
    assert stable_min_replicas(zero, MASTER) == 0 and stable_floor(zero, MASTER) == 0


def test_keda_keeps_a_minimum_of_zero_and_hpa_raises_it_to_one() -> None:
    obj = isvc(minReplicas=0, maxReplicas=4)
    obj["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] = "keda"
    plan = replica_plan(admit_isvc(obj, MASTER), MASTER)
    assert (plan.scaler, plan.pods()) == ("ScaledObject", (0, 4))
    del obj["spec"]["predictor"]["maxReplicas"]
    assert replica_plan(obj, MASTER).pods() == (0, 0)  # maxReplicaCount raised to the minimum only
    del obj["spec"]["predictor"]["minReplicas"]
    assert replica_plan(obj, MASTER).pods() == (1, 1)  # unset: DefaultMinReplicas
    hpa = isvc(minReplicas=0, maxReplicas=4)
    hpa["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] = "hpa"
    assert replica_plan(hpa, MASTER).pods() == (1, 4)


def test_framework_defaults() -> None:
    """assignONNXRuntime and friends, the modelFormat annotation, the default deployment mode."""
    bare: dict[str, Any] = {
        "metadata": {"name": "m"},
        "spec": {"predictor": {"onnx": {"storageUri": "s3://m"}}},
    }
    out = default_isvc(bare, MASTER)
    assert out["spec"]["predictor"] == {
        "model": {"modelFormat": {"name": "onnx"}, "protocolVersion": "v2", "storageUri": "s3://m"}
    }
    # Serverless is the shipped default: no annotation written, the object is Knative's.
    assert out["metadata"]["annotations"] == {"modelFormat": "onnx"}
    assert "modelFormat" not in default_isvc(bare, KServe("v0.16.0"))["metadata"]["annotations"]
    assert (
        default_isvc(bare, V20, "Standard")["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
        == "Standard"
    )
    assert (
        default_isvc(bare, V20, "RawDeployment")["metadata"]["annotations"][
            "serving.kserve.io/deploymentMode"
        ]
        == "Standard"
    )  # normalised from v0.16.0
    assert default_isvc(bare, KServe("v0.15.1"), "RawDeployment")["metadata"]["annotations"] == {
        "serving.kserve.io/deploymentMode": "RawDeployment"
    }
    assert (
        "serving.kserve.io/deploymentMode"
        not in default_isvc(bare, V20, "Knative")["metadata"]["annotations"]
    )
    with pytest.raises(ValueError, match="invalid deployment mode"):
        default_isvc(bare, V20, "Raw")
    # A user's annotation wins; xgboost and lightgbm get no protocol (their runtimes serve v1).
    xgb = {"metadata": {"name": "m", "annotations": {"modelFormat": "custom"}},
           "spec": {"predictor": {"xgboost": {"storageUri": "s3://m"}}}}  # fmt: skip
    out = default_isvc(xgb, MASTER)
    assert out["metadata"]["annotations"]["modelFormat"] == "custom"
    assert "protocolVersion" not in out["spec"]["predictor"]["model"]
    vllm = {"metadata": {"name": "m"}, "spec": {"predictor": {"model": {"modelFormat": {"name": "vLLM"}}}}}
    assert default_isvc(vllm, V20)["spec"]["predictor"]["model"]["protocolVersion"] == "v2"
    assert "protocolVersion" not in default_isvc(vllm, KServe("v0.19.0"))["spec"]["predictor"]["model"]
    # ModelMesh predictors are left alone.
    mm = copy.deepcopy(bare)
    mm["metadata"]["annotations"] = {"serving.kserve.io/deploymentMode": "ModelMesh"}
    assert "onnx" in default_isvc(mm, MASTER)["spec"]["predictor"]
    # An onnx framework key without protocolVersion is v2, so Triton (v2 only) can serve it.
    onnx = isvc(model=None)
    onnx["spec"]["predictor"] = {"onnx": {"storageUri": "s3://m"}}
    assert select_runtime(admit_isvc(onnx, V20), [], builtin_runtimes(V20)) == (
        "ClusterServingRuntime", "kserve-tritonserver"
    )  # fmt: skip


@pytest.mark.parametrize("version", SUPPORTED)
def test_predictiveserver_is_named_only_and_clashes_with_nobody(version: str) -> None:
    """kserve-predictiveserver (v0.17.0+) claims xgboost 2 / lightgbm 4 at priority 3, like our
    runtime, but never auto-selects: an InferenceService naming no runtime never lands on it,
    one naming it does, and our priority-3 ClusterServingRuntime passes the webhook beside it."""
    kserve = KServe(version)
    cluster = builtin_runtimes(kserve)
    names = {r["metadata"]["name"] for r in cluster}
    assert ("kserve-predictiveserver" in names) == kserve.at_least("v0.17.0")
    for fmt in ("xgboost", "lightgbm"):
        model = {"modelFormat": {"name": fmt}, "protocolVersion": "v2", "storageUri": "s3://m"}
        assert select_runtime(isvc(model=model), [], cluster) == ("ClusterServingRuntime", "kserve-mlserver")
        v1 = {"modelFormat": {"name": fmt}, "storageUri": "s3://m"}
        expected = "kserve-xgbserver" if fmt == "xgboost" else "kserve-lgbserver"
        assert select_runtime(isvc(model=v1), [], cluster)[1] == expected
        named = isvc(model={**model, "runtime": "kserve-predictiveserver"})
        if kserve.at_least("v0.17.0"):
            assert select_runtime(named, [], cluster) == ("ClusterServingRuntime", "kserve-predictiveserver")
        else:
            with pytest.raises(Refused, match="No ServingRuntimes or ClusterServingRuntimes"):
                select_runtime(named, [], cluster)
    assert validate_runtime(ours(True, 3), cluster, kserve) is None
    xgb = isvc(model={"modelFormat": {"name": "xgboost"}, "protocolVersion": "v2", "storageUri": "s3://m"})
    assert select_runtime(xgb, [], [*cluster, ours(True, 3)]) == ("ClusterServingRuntime", "serving")


def test_openvino_when_installed_by_hand() -> None:
    """kserve-openvino claims onnx at priority 2 but is not installed by default: where a platform
    applied it, onnx InferenceServices that name no runtime go to it instead of Triton, and an
    auto-selecting runtime of ours at priority 2 is refused for onnx too."""
    default, with_ov = builtin_runtimes(MASTER), builtin_runtimes(MASTER, openvino=True)
    assert "kserve-openvino" not in {r["metadata"]["name"] for r in default}
    model = {"modelFormat": {"name": "onnx"}, "protocolVersion": "v2", "storageUri": "s3://m"}
    assert select_runtime(isvc(model=model), [], default)[1] == "kserve-tritonserver"
    assert select_runtime(isvc(model=model), [], with_ov)[1] == "kserve-openvino"
    assert select_runtime(isvc(model=model), [], [*with_ov, ours(True, 3)])[1] == "serving"
    onnx_only = runtime("serving", "ClusterServingRuntime", protocolVersions=["v2"],
                        supportedModelFormats=[{"name": "onnx", "version": "1", "autoSelect": True, "priority": 2}])  # fmt: skip
    assert validate_runtime(onnx_only, default, MASTER) is None
    assert validate_runtime(onnx_only, with_ov, MASTER) == (
        "same priority assigned for the model format onnx in the clusterservingruntimes kserve-openvino and serving"
    )
    with pytest.raises(ValueError, match="no kserve-openvino"):
        builtin_runtimes(KServe("v0.16.0"), openvino=True)

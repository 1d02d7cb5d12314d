"""KServe's admission webhooks and the controller decisions our objects depend on, as code.

No cluster runs in CI, so what KServe's webhooks refuse and what its controller does with an
accepted object is ported here from KServe's Go source and applied to every object we render
and every patch the rollout CLI sends. Each rule cites the file and the commits it was read
from; where releases differ, the rule takes the version (``KServe("v0.16.0")``) and follows
that release. Read with ``git show <tag>:<path>`` in a clone of kserve/kserve:

    v0.14.0 7e4364246449715b902dc967167e38b38773c9cd    v0.18.0 3a432a84880407b15c63f458080258838eff2792
    v0.15.0 d20d4228a8b2956b800ad5a3e62c0578b5a5b97f    v0.19.0 b0eda63d2c105479140af8ec9149d992b7e44be5
    v0.15.1 3a1dc463c63c03bb2e8d63ac9d2c3167f25d1e68    v0.20.0 1fb781055dd1567164358233e1125142ca6ef1fe
    v0.16.0 5b033a4024429302440b72180472ae2d26b44086    master  aaac4e294dae2c7b1aa1886447793f3aa1c30912
    v0.17.0 c71eba91631b976ff7b111f3061df9af86399e99

Paths below are relative to the repository root. Messages are KServe's own, so a test failure
reads like the API server's refusal. Only what our objects can touch is ported: multi-node
(workerSpec), confidential serving, ModelMesh and LLMInferenceService are not.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import re
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]

RELEASES = (
    "v0.14.0", "v0.15.0", "v0.15.1", "v0.16.0", "v0.17.0", "v0.18.0", "v0.19.0", "v0.20.0", "master",
)  # fmt: skip
SUPPORTED = ("v0.15.1", "v0.16.0", "v0.17.0", "v0.18.0", "v0.19.0", "v0.20.0", "master")
"""The releases our objects must be accepted by (class ``none`` exists from v0.15.1)."""


@functools.total_ordering
@dataclass(frozen=True)
class KServe:
    """A KServe release (or ``master``), ordered by release."""

    version: str

    def __post_init__(self) -> None:
        if self.version not in RELEASES:
            raise ValueError(f"no rules read for KServe {self.version}; known: {', '.join(RELEASES)}")

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, KServe):
            return NotImplemented
        return RELEASES.index(self.version) < RELEASES.index(other.version)

    def at_least(self, version: str) -> bool:
        return RELEASES.index(self.version) >= RELEASES.index(version)


class Refused(Exception):
    """The webhook (or the controller) refuses: the message is KServe's."""


# -- InferenceService: the mutating webhook ----------------------------------------------------
# pkg/apis/serving/v1beta1/inference_service_defaults.go (DefaultInferenceService,
# setPredictorModelDefaults, assign<Framework>Runtime), read at v0.14.0 7e43642 .. v0.20.0 1fb7810
# and master aaac4e2. Mutating webhooks run before validating ones, so validation sees the
# rewritten object. What the defaulter does, in order:
# - from v0.17.0 the deprecated deploymentMode values are rewritten (RawDeployment -> Standard,
#   Serverless -> Knative);
# - without the annotation, the ``deploy.defaultDeploymentMode`` of inferenceservice-config is
#   written into it, but only when that is Standard (RawDeployment before v0.16.0) or ModelMesh:
#   a Knative/Serverless default leaves the annotation out (pkg/apis/serving/v1beta1/configmap.go
#   NewDeployConfig normalises the legacy names from v0.16.0; KServe ships "Serverless");
# - unless the annotation said ModelMesh: a framework key (xgboost:, onnx:, ...) becomes ``model``
#   with modelFormat.name; triton, onnx and huggingface get protocolVersion v2 when they have
#   none (assignTritonRuntime, assignONNXRuntime, assignHuggingFaceRuntime: all releases); a
#   ``model`` of format triton (all releases) or vLLM (v0.20.0+) gets v2 as well; from v0.17.0
#   the ``modelFormat`` annotation (constants.ModelFormatAnnotationKey, read by the
#   kserve-predictiveserver runtime's ``--framework={{.Annotations.modelFormat}}``) is set to
#   the format name unless present.
FRAMEWORKS = (
    "sklearn", "tensorflow", "xgboost", "pytorch", "triton", "onnx", "huggingface", "pmml", "lightgbm",
    "paddle",
)  # fmt: skip
# PredictorSpec.GetImplementations order, pkg/apis/serving/v1beta1/predictor.go
IMPLEMENTATIONS = (
    "xgboost", "pytorch", "triton", "sklearn", "tensorflow", "onnx", "pmml", "lightgbm", "paddle",
    "huggingface", "model",
)  # fmt: skip
MODE = "serving.kserve.io/deploymentMode"
MODEL_FORMAT = "modelFormat"  # constants.ModelFormatAnnotationKey, v0.17.0+
AUTOSCALER_CLASS = "serving.kserve.io/autoscalerClass"
KNATIVE_CLASS = "autoscaling.knative.dev/class"
KNATIVE_HPA = "hpa.autoscaling.knative.dev"
DEFAULT_DEPLOYMENT_MODE = "Serverless"
"""``deploy.defaultDeploymentMode`` as config/configmap/inferenceservice.yaml ships it (all releases)."""
PROTOCOL_V2_FRAMEWORKS = ("triton", "onnx", "huggingface")


def _configured_mode(default_mode: str, kserve: KServe) -> str:
    """NewDeployConfig: the configured default, normalised from v0.16.0; refused when unknown."""
    if kserve.at_least("v0.16.0"):
        mode = {"Serverless": "Knative", "RawDeployment": "Standard"}.get(default_mode, default_mode)
        allowed = ("Knative", "Standard", "ModelMesh")
    else:
        mode, allowed = default_mode, ("Serverless", "RawDeployment", "ModelMesh")
    if mode not in allowed:
        raise ValueError(
            f"invalid deployment mode. Supported modes are {', '.join(allowed[:2])} and ModelMesh"
        )
    return mode


def default_isvc(isvc: Obj, kserve: KServe, default_mode: str = DEFAULT_DEPLOYMENT_MODE) -> Obj:
    """The object after KServe's mutating webhook; ``default_mode`` is the cluster's
    ``deploy.defaultDeploymentMode``."""
    out = copy.deepcopy(isvc)
    annotations = out.setdefault("metadata", {}).setdefault("annotations", {}) or {}
    out["metadata"]["annotations"] = annotations
    written = MODE in annotations
    mode = annotations.get(MODE)
    if written and kserve.at_least("v0.17.0"):
        if mode == "RawDeployment":
            annotations[MODE] = "Standard"
        elif mode == "Serverless":
            annotations[MODE] = "Knative"
    if not written:
        configured = _configured_mode(default_mode, kserve)
        if configured in ("ModelMesh", "Standard", "RawDeployment"):
            annotations[MODE] = configured
    if written and mode == "ModelMesh":
        return out
    predictor = out.get("spec", {}).get("predictor") or {}
    for key in FRAMEWORKS:
        if isinstance(predictor.get(key), dict):
            spec = predictor.pop(key)
            if key in PROTOCOL_V2_FRAMEWORKS and spec.get("protocolVersion") is None:
                spec["protocolVersion"] = "v2"
            predictor["model"] = {"modelFormat": {"name": key}, **spec}
            break
    model = predictor.get("model")
    if isinstance(model, dict):
        fmt = (model.get("modelFormat") or {}).get("name") or ""
        v2_formats = ("triton", "vLLM") if kserve.at_least("v0.20.0") else ("triton",)
        if model.get("protocolVersion") is None and fmt in v2_formats:
            model["protocolVersion"] = "v2"
        if kserve.at_least("v0.17.0") and fmt:
            annotations.setdefault(MODEL_FORMAT, fmt)
    return out


# -- InferenceService: the validating webhook --------------------------------------------------
# pkg/apis/serving/v1beta1/inference_service_validation.go, and component.go for the
# component extension (replicas, containerConcurrency, logger).
ISVC_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # IsvcNameFmt, all releases


def _allowed_classes(kserve: KServe) -> tuple[str, ...]:
    # pkg/constants/constants.go AutoscalerAllowedClassList: v0.14.0 hpa, external;
    # v0.15.0 adds keda; v0.15.1 adds none.
    if not kserve.at_least("v0.15.0"):
        return ("hpa", "external")
    if not kserve.at_least("v0.15.1"):
        return ("hpa", "external", "keda")
    return ("hpa", "external", "keda", "none")


def implementations(predictor: Obj) -> list[str]:
    found = [k for k in IMPLEMENTATIONS if isinstance(predictor.get(k), dict)]
    containers = predictor.get("containers") or []
    if containers:
        found += ["custom"] * sum(c.get("name") == "kserve-container" for c in containers)
        if not found:
            found.append("custom")  # no kserve-container: the first container is the predictor
    return found


def _storage_uri(predictor: Obj) -> str | None:
    impl = implementations(predictor)
    if impl and impl[0] != "custom":
        uri: str | None = predictor[impl[0]].get("storageUri")
        return uri
    return None


def _validate_extension(ext: Obj) -> str | None:
    # component.go ComponentExtensionSpec.Validate (all releases)
    cc = ext.get("containerConcurrency")
    if cc is not None and cc < 0:
        return "parallelism cannot be less than 0"
    low, high = ext.get("minReplicas", 1), ext.get("maxReplicas", 0)
    if low is not None and low < 0:
        return "'MinReplicas' cannot be less than 0"
    if high < 0:
        return "'MaxReplicas' cannot be less than 0"
    if low is not None and low > high and high != 0:
        return "'MinReplicas' cannot be greater than MaxReplicas"
    logger = ext.get("logger")
    if logger is not None and logger.get("mode", "all") not in ("all", "request", "response"):
        return "invalid logger type"
    return None


def _validate_hpa(ext: Obj) -> str | None:
    metric = ext.get("scaleMetric") or "cpu"
    if metric not in ("cpu", "memory"):
        return f"[{metric}] is not a supported metric"
    target = ext.get("scaleTarget")
    if target is not None:
        # Go precedence, kept: (cpu && target < 1) || target > 100, for any metric.
        if (metric == "cpu" and target < 1) or target > 100:
            return "the target utilization percentage should be a [1-100] integer"
        if metric == "memory" and target < 1:
            return "the target memory should be greater than 1 MiB"
    for m in (ext.get("autoScaling") or {}).get("metrics") or []:
        if m.get("type") != "Resource":
            return (
                f"invalid HPA metric source type with value [{m.get('type')}],"
                "valid metric source types are Resource"
            )
        if m.get("resource") is None:
            return "metricSpec.Resource is not set for resource metric source type"
    return None


def _validate_keda(ext: Obj) -> str | None:
    if ext.get("scaleMetric") is not None:
        return "ScaleMetric is not supported for KEDA"
    for m in (ext.get("autoScaling") or {}).get("metrics") or []:
        kind = m.get("type")
        if kind == "Resource":
            resource = m.get("resource")
            if resource is None:
                return "metricSpec.Resource is not set for resource metric source type"
            target = resource.get("target") or {}
            if resource.get("name") == "cpu" and target.get("type") != "Utilization":
                return "the cpu target value type should be Utilization"
            if resource.get("name") == "memory" and target.get("type") not in ("AverageValue", "Utilization"):
                return "the memory target value type should be AverageValue or Utilization"
            if resource.get("name") not in ("cpu", "memory"):
                return f"resource type {resource.get('name')} is not supported"
        elif kind in ("External", "PodMetric"):
            source = m.get("external" if kind == "External" else "podmetric")
            if source is None:
                what = (
                    "External is not set for external"
                    if kind == "External"
                    else "PodMetric is not set for pod"
                )
                return f"metricSpec.{what} metric source type"
            if not (source.get("metric") or {}).get("query"):
                return "the query should not be empty"
            if (source.get("target") or {}).get("value") is None:
                return "the target threshold value should not be empty"
        else:
            return f"unknown KEDA metric type with value [{kind}].Valid types are Resource,External,PodMetric"
    return None


def _validate_kpa(ext: Obj) -> str | None:
    if ext.get("deploymentStrategy") is not None:
        return "customizing deploymentStrategy is only supported for raw deployment mode"
    metric = ext.get("scaleMetric") or "concurrency"
    if metric not in ("concurrency", "rps"):
        return f"[{metric}] is not a supported metric"
    if metric == "rps" and ext.get("scaleTarget") is not None and ext["scaleTarget"] < 1:
        return "the target for rps should be greater than 1"
    return None


def _validate_autoscaling(annotations: Obj, ext: Obj, kserve: KServe) -> str | None:
    """validateAutoScalingCompExtension. It reads the annotation as written (after the
    mutating webhook): v0.14.0 checks HPA rules for RawDeployment, v0.15.0 switches on
    RawDeployment, v0.16.0+ on Standard. On v0.16.0 (no rewrite yet) a ``RawDeployment``
    object therefore gets the Knative (KPA) rules: ``scaleMetric: cpu`` is refused there."""
    mode = annotations.get(MODE, "")
    knative_class = annotations.get(KNATIVE_CLASS, "")
    if not kserve.at_least("v0.15.0"):
        if mode == "RawDeployment" or knative_class == KNATIVE_HPA:
            return _validate_hpa(ext)
        return _validate_kpa(ext)
    standard = "Standard" if kserve.at_least("v0.16.0") else "RawDeployment"
    if mode == standard:
        klass = annotations.get(AUTOSCALER_CLASS, "")
        if klass == "hpa":
            return _validate_hpa(ext)
        if klass == "keda":
            return _validate_keda(ext)
        return None
    if knative_class == KNATIVE_HPA:
        return _validate_hpa(ext)
    return _validate_kpa(ext)


def _blocked_env(containers: list[Obj]) -> str | None:
    # pkg/validation/env_policy.go (v0.18.0+): DefaultBlockedEnvVars = [PYTHONPATH]
    for c in containers:
        for env in c.get("env") or []:
            if env.get("name") == "PYTHONPATH":
                return f'setting PYTHONPATH in container "{c.get("name", "")}" is not allowed for security reasons'
    return None


def _validate_canaries(isvc: Obj) -> str | None:
    """validateCanarySpecs (v0.20.0+; absent before: the field is not in older CRDs)."""
    spec = isvc["spec"]
    canaries = spec.get("canary") or []
    if not canaries:
        return None
    if (isvc["metadata"].get("annotations") or {}).get(MODE) != "Standard":
        return "canary is only supported in Standard deployment mode"
    stable = spec["predictor"]
    if _storage_uri(stable) is None and stable.get("model") is None:
        return "canary requires a stable predictor with a model (multi-model serving is not supported with canary)"
    names: set[str] = set()
    total = 0
    for i, canary in enumerate(canaries):
        predictor = canary.get("predictor") or {}
        name = predictor.get("name") or ""
        if not name:
            return f"canary[{i}] predictor.name is required"
        if name in names:
            return f'canary predictor.name "{name}" is duplicated'
        names.add(name)
        if name == (stable.get("name") or ""):
            return f'canary predictor.name "{name}" conflicts with stable predictor name'
        percent = canary.get("trafficPercent", 0)
        if not 0 <= percent <= 100:
            return f'canary "{name}" trafficPercent must be between 0 and 100, got {percent}'
        total += percent
        if len(implementations(predictor)) != 1:
            return f'canary "{name}" predictor: exactly one of [{", ".join(IMPLEMENTATIONS)}] must be specified in PredictorSpec'
        if (problem := _validate_extension(predictor)) is not None:
            return f'canary "{name}" predictor: {problem}'
        if predictor.get("workerSpec") is not None:
            return f'canary "{name}" must not set workerSpec (multi-node is not yet supported for canary)'
        if predictor.get("maxReplicas", 0) > 0:
            return f'canary "{name}" must not set maxReplicas (canary uses fixed replicas)'
        for field in ("scaleTarget", "scaleMetric", "autoScaling"):
            if predictor.get(field) is not None:
                return f'canary "{name}" must not set {field} (canary uses fixed replicas)'
        if predictor.get("minReplicas") is not None:
            stable_min = stable.get("minReplicas", 1)
            if predictor["minReplicas"] > stable_min:
                return (
                    f'canary "{name}" minReplicas ({predictor["minReplicas"]}) must not exceed '
                    f"stable predictor minReplicas ({stable_min})"
                )
    if total > 100:
        return f"sum of canary trafficPercent values ({total}) must be <= 100"
    return None


def validate_isvc(isvc: Obj, kserve: KServe, old: Obj | None = None) -> str | None:
    """ValidateCreate (``old`` None) or ValidateUpdate of an already defaulted object: the
    first refusal, as KServe returns it, or None."""
    meta = isvc.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    spec = isvc.get("spec") or {}
    predictor = spec.get("predictor") or {}
    if old is not None:
        # validateDeploymentMode (v0.16.0+): the annotation may not leave the mode in the
        # status; v0.20.0+ lets it through while the status has none yet.
        recorded = (old.get("status") or {}).get("deploymentMode") or ""
        if kserve.at_least("v0.16.0") and (recorded or not kserve.at_least("v0.20.0")):
            normal = {"RawDeployment": "Standard", "Serverless": "Knative", "": "Standard"}.get(
                recorded, recorded
            )
            if MODE in annotations and annotations[MODE] != normal:
                return f"update rejected: deploymentMode cannot be changed from '{normal}' to '{annotations[MODE]}'"
        # validatePredictorNameChange (v0.20.0+)
        old_predictor = (old.get("spec") or {}).get("predictor") or {}
        renamed = (old_predictor.get("name") or "") != (predictor.get("name") or "")
        same_model = (_storage_uri(old_predictor) or "") == (_storage_uri(predictor) or "")
        if kserve.at_least("v0.20.0") and renamed and same_model:
            return "predictor.name change requires a model change (e.g. storageUri)"
    name = meta.get("name", "")
    if not ISVC_NAME.match(name):
        return (
            f'the InferenceService "{name}" is invalid: a InferenceService name must consist of lower case '
            "alphanumeric characters or '-', and must start with alphabetical character. "
            f'(e.g. "my-name" or "abc-123", regex used for validation is \'{ISVC_NAME.pattern[1:-1]}\')'
        )
    klass = annotations.get(AUTOSCALER_CLASS)
    if klass is not None and klass not in _allowed_classes(kserve):
        return f"[{klass}] is not a supported autoscaler class type"
    if kserve.at_least("v0.18.0"):
        containers = list(predictor.get("containers") or []) + list(predictor.get("initContainers") or [])
        impl = implementations(predictor)
        if impl and impl[0] != "custom":
            containers.append({"name": predictor[impl[0]].get("name", ""), **predictor[impl[0]]})
        for component in ("transformer", "explainer"):
            part = spec.get(component) or {}
            containers += list(part.get("containers") or []) + list(part.get("initContainers") or [])
        if (problem := _blocked_env(containers)) is not None:
            return f'the InferenceService "{name}" is invalid: {problem}'
    for c in predictor.get("containers") or []:
        if c.get("name") == "transformer-container" and any(
            e.get("name") == "STORAGE_URI" for e in c.get("env") or []
        ):
            return "storage uri should not be specified in transformer container"
    if kserve.at_least("v0.16.0"):
        # validatePredictor: no container name in the stable predictor's model/framework.
        for key in IMPLEMENTATIONS:
            if isinstance(predictor.get(key), dict) and predictor[key].get("name"):
                return "the 'name' field is not allowed in standard predictor"
    if _storage_uri(predictor) is not None and predictor.get("storageUris") is not None:
        return "Setting both StorageURI and StorageURIs is not supported."
    for component in ("predictor", "transformer", "explainer"):
        part = spec.get(component)
        if part is None:
            continue
        if component == "predictor" and len(implementations(part)) != 1:
            return f"exactly one of [{', '.join(IMPLEMENTATIONS)}] must be specified in PredictorSpec"
        problem = _validate_extension(part) or _validate_autoscaling(annotations, part, kserve)
        if problem is not None:
            return problem
    if kserve.at_least("v0.20.0"):
        return _validate_canaries(isvc)
    return None


def admit_isvc(
    isvc: Obj, kserve: KServe, old: Obj | None = None, default_mode: str = DEFAULT_DEPLOYMENT_MODE
) -> Obj:
    """What the API server stores after both webhooks, or ``Refused`` with KServe's message."""
    defaulted = default_isvc(isvc, kserve, default_mode)
    problem = validate_isvc(defaulted, kserve, old)
    if problem is not None:
        raise Refused(problem)
    return defaulted


# -- ServingRuntime / ClusterServingRuntime: the validating webhook --------------------------
# pkg/webhook/admission/servingruntime/servingruntime_webhook.go (same priority rules
# v0.14.0..master). A ServingRuntime is checked against the ServingRuntimes of its namespace,
# a ClusterServingRuntime against the ClusterServingRuntimes (KServe's built-ins among them).
def _auto(fmt: Obj) -> bool:
    return bool(fmt.get("autoSelect"))


def validate_runtime(runtime: Obj, existing: list[Obj], kserve: KServe) -> str | None:
    spec = runtime["spec"]
    name = runtime["metadata"]["name"]
    kind = runtime["kind"]
    if spec.get("disabled"):
        return None
    for other in existing:
        seen: dict[str, Any] = {}
        for fmt in spec.get("supportedModelFormats") or []:
            if not _auto(fmt):
                continue
            if fmt["name"] in seen:
                prev = seen[fmt["name"]]
                if prev is not None and fmt.get("priority") is not None and prev != fmt["priority"]:
                    where = "clusterservingruntime" if kind == "ClusterServingRuntime" else "servingruntime"
                    return f"different priorities assigned for the model format {fmt['name']} under the {where} {name}"
            else:
                seen[fmt["name"]] = fmt.get("priority")
        other_spec = other["spec"]
        other_name = other["metadata"]["name"]
        if (
            bool(spec.get("multiModel")) != bool(other_spec.get("multiModel"))
            or other_spec.get("disabled")
            or other_name == name
        ):
            continue
        if not set(other_spec.get("protocolVersions") or []) & set(spec.get("protocolVersions") or []):
            continue
        for theirs in other_spec.get("supportedModelFormats") or []:
            for ours in spec.get("supportedModelFormats") or []:
                same = theirs["name"].lower() == ours["name"].lower() and theirs.get("version") == ours.get(
                    "version"
                )
                clash = theirs.get("priority") is not None and theirs.get("priority") == ours.get("priority")
                if _auto(theirs) and _auto(ours) and same and clash:
                    if kind == "ClusterServingRuntime":
                        return (
                            f"same priority assigned for the model format {ours['name']} in the "
                            f"clusterservingruntimes {other_name} and {name}"
                        )
                    ns = runtime["metadata"].get("namespace", "")
                    return (
                        f"same priority assigned for the model format {ours['name']} in the "
                        f"servingruntimes {other_name} and {name} in namespace {ns}"
                    )
    if kserve.at_least("v0.18.0"):
        problem = _blocked_env(spec.get("containers") or [])
        if problem is not None:
            return f'the {kind} "{name}" is invalid: {problem}'
    return None


# -- Runtime selection: which runtime serves an InferenceService ----------------------------
# pkg/apis/serving/v1beta1/predictor_model.go (GetSupportingRuntimes, RuntimeSupportsModel,
# sortServingRuntimeList, sortSupportedRuntimeByPriority), pkg/apis/serving/v1alpha1/
# servingruntime_types.go (IsProtocolVersionSupported, GetPriority), and the caller
# pkg/controller/v1beta1/inferenceservice/components/predictor.go reconcileModel. Same logic
# v0.14.0..master, except that master sorts priorities with sort.SliceStable where releases
# use sort.Slice; Go's sort.Slice is an insertion sort (stable) below 13 elements, so the
# result is the same for any realistic number of runtimes.
PROTOCOL_ORDER = {"v1": 1, "v2": 2, "grpc-v1": 3, "grpc-v2": 4}  # constants.GetProtocolVersionInt


def _protocol_priority(protocols: list[str] | None) -> int:
    if not protocols:
        return 5  # constants.Unknown
    return min(PROTOCOL_ORDER.get(p, 5) for p in protocols)


def _format_labels(model: Obj, formats: list[Obj]) -> set[str]:
    labels = set()
    for fmt in formats:
        # Without a named runtime, only formats with autoSelect true count (nil is false).
        if model.get("runtime") is not None or _auto(fmt):
            labels.add("mt:" + fmt["name"])
            if fmt.get("version") is not None:
                labels.add("mt:" + fmt["name"] + ":" + fmt["version"])
    return labels


def runtime_supports_model(model: Obj, runtime_spec: Obj) -> bool:
    fmt = model.get("modelFormat") or {}
    label = "mt:" + fmt.get("name", "") + (":" + fmt["version"] if fmt.get("version") is not None else "")
    return label in _format_labels(model, runtime_spec.get("supportedModelFormats") or [])


def _protocol_supported(runtime_spec: Obj, protocol: str) -> bool:
    versions = runtime_spec.get("protocolVersions") or []
    return not protocol or not versions or protocol in versions


def _sorted(runtimes: list[Obj], format_name: str) -> list[Obj]:
    def created(r: Obj) -> str:
        return str(r["metadata"].get("creationTimestamp") or "")

    # protocol priority asc, then newest first, then name asc
    out = sorted(runtimes, key=lambda r: r["metadata"]["name"])
    out.sort(key=created, reverse=True)
    out.sort(key=lambda r: _protocol_priority(r["spec"].get("protocolVersions")))

    def priority(r: Obj) -> Any:
        for fmt in r["spec"].get("supportedModelFormats") or []:
            if fmt["name"] == format_name:
                return fmt.get("priority")
        return None

    # stable: with a priority before without; higher first
    return sorted(out, key=lambda r: (priority(r) is None, -(priority(r) or 0)))


def supporting_runtimes(model: Obj, namespaced: list[Obj], cluster: list[Obj]) -> list[tuple[str, str]]:
    """(kind, name) of every runtime KServe would consider, best first: namespaced
    ServingRuntimes (sorted) always before ClusterServingRuntimes (sorted)."""
    protocol = model.get("protocolVersion") or "v1"  # ModelSpec.GetProtocol defaults to v1
    out: list[tuple[str, str]] = []
    for kind, items in (("ServingRuntime", namespaced), ("ClusterServingRuntime", cluster)):
        fit = [
            r
            for r in items
            if not r["spec"].get("disabled")
            and not r["spec"].get("multiModel")
            and r["spec"].get("workerSpec") is None
            and runtime_supports_model(model, r["spec"])
            and _protocol_supported(r["spec"], protocol)
        ]
        out += [
            (kind, r["metadata"]["name"])
            for r in _sorted(fit, (model.get("modelFormat") or {}).get("name", ""))
        ]
    return out


def select_runtime(isvc: Obj, namespaced: list[Obj], cluster: list[Obj]) -> tuple[str, str]:
    """The runtime the controller runs the (defaulted) predictor with, or ``Refused`` with the
    reason the controller puts in the status."""
    model = isvc["spec"]["predictor"].get("model")
    if model is None:
        raise Refused("no model section: the predictor is a custom container")
    named = model.get("runtime")
    if named is None:
        found = supporting_runtimes(model, namespaced, cluster)
        if not found:
            fmt = model.get("modelFormat")
            raise Refused(f"no runtime found to support predictor with model type: {fmt}")
        return found[0]
    # A named runtime: the namespaced one first, then the cluster one (utils.GetServingRuntime).
    for kind, items in (("ServingRuntime", namespaced), ("ClusterServingRuntime", cluster)):
        runtime = next((r for r in items if r["metadata"]["name"] == named), None)
        if runtime is None:
            continue
        spec = runtime["spec"]
        if spec.get("disabled"):
            raise Refused(f"specified runtime {named} is disabled")
        if model.get("protocolVersion") is not None and not _protocol_supported(
            spec, model["protocolVersion"]
        ):
            raise Refused(f"specified runtime {named} does not support specified protocol version")
        if not runtime_supports_model(model, spec):
            raise Refused(f"specified runtime {named} does not support specified framework/version")
        return kind, named
    raise Refused(f"No ServingRuntimes or ClusterServingRuntimes with the name: {named}")


# KServe's built-in ClusterServingRuntimes that claim onnx, xgboost or lightgbm, as shipped in
# config/runtimes/kserve-{tritonserver,xgbserver,mlserver,lgbserver,predictiveserver}.yaml and
# listed in config/runtimes/kustomization.yaml (v0.17.0 c71eba9 .. v0.20.0 1fb7810, master
# aaac4e2; v0.14.0..v0.16.0 had xgbserver xgboost "1" and lgbserver lightgbm "3", and no
# predictiveserver). The Helm chart kserve-runtime-configs installs the same set
# (files/runtimes/resources.yaml). Only the fields selection and the runtime webhook read.
# Installed with KServe, so older than ours.
#
# kserve-predictiveserver (v0.17.0+) claims xgboost 2 and lightgbm 4 at priority 3, like our
# chart's runtime, but with autoSelect false: it is never chosen for an InferenceService that
# names no runtime, and the runtime webhook only compares autoSelect formats, so it clashes with
# nothing. kserve-openvino (config/runtimes/kserve-openvino.yaml, v0.17.0+) claims onnx at
# priority 2 with autoSelect, but is in neither the kustomization nor the Helm chart: only a
# platform that applies it by hand has it (``openvino=True``).
def _fmt(name: str, version: str | None, priority: int | None = None, auto: bool | None = True) -> Obj:
    out: Obj = {"name": name}
    if version is not None:
        out["version"] = version
    if auto is not None:
        out["autoSelect"] = auto
    if priority is not None:
        out["priority"] = priority
    return out


def _csr(name: str, protocols: list[str], formats: list[Obj]) -> Obj:
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ClusterServingRuntime",
        "metadata": {"name": name, "creationTimestamp": "2020-01-01T00:00:00Z"},
        "spec": {"protocolVersions": protocols, "supportedModelFormats": formats},
    }


def builtin_runtimes(kserve: KServe, openvino: bool = False) -> list[Obj]:
    old = not kserve.at_least("v0.17.0")
    fmt = _fmt
    runtimes = [
        _csr("kserve-tritonserver", ["v2", "grpc-v2"], [
            fmt("tensorrt", "8", 1), fmt("tensorflow", "1", 1), fmt("tensorflow", "2", 1),
            fmt("onnx", "1", 1), fmt("pytorch", "1", auto=None), fmt("triton", "2", 1),
        ]),
        _csr("kserve-xgbserver", ["v1", "v2"], [fmt("xgboost", "1" if old else "2", 1)]),
        _csr("kserve-mlserver", ["v2"], [
            fmt("sklearn", "0", 2), fmt("sklearn", "1", 2), fmt("xgboost", "1", 2), fmt("xgboost", "2", 2),
            fmt("lightgbm", "3", 2), fmt("lightgbm", "4", 2), fmt("mlflow", "1", 1), fmt("mlflow", "2", 1),
        ]),
        _csr("kserve-lgbserver", ["v1", "v2"], [fmt("lightgbm", "3" if old else "4", 1)]),
    ]  # fmt: skip
    if not old:
        runtimes.append(_csr("kserve-predictiveserver", ["v1", "v2"], [
            fmt("sklearn", "1", 3, auto=False), fmt("xgboost", "2", 3, auto=False),
            fmt("lightgbm", "4", 3, auto=False),
        ]))  # fmt: skip
    if openvino:
        if old:
            raise ValueError(f"KServe {kserve.version} has no kserve-openvino runtime (v0.17.0+)")
        runtimes.append(_csr("kserve-openvino", ["v1", "v2", "grpc-v2"], [
            fmt("openvino", "10", 1), fmt("onnx", "1", 2), fmt("tensorflow", "1", 3),
            fmt("huggingface", None),
        ]))  # fmt: skip
    return runtimes


# -- Replicas per autoscaler class (Standard mode) --------------------------------------------
# pkg/controller/v1beta1/inferenceservice/reconcilers/deployment/deployment_reconciler.go
# (createRawDefaultDeployment), reconcilers/autoscaler/autoscaler_reconciler.go,
# reconcilers/hpa/hpa_reconciler.go (createHPA: a minReplicas below 1 becomes 1),
# reconcilers/keda/keda_reconciler.go (createKedaScaledObject, v0.15.0 d20d422 .. master
# aaac4e2: only a missing minReplicas becomes 1; minReplicas 0 is kept as minReplicaCount 0, and
# maxReplicaCount is raised to the minimum).
#
# During a Standard-mode canary the stable predictor's minimum is cut first
# (components/predictor.go reconcileRawDeployment): KServe passes the stable Deployment, HPA or
# ScaledObject ``minReplicas`` minus the replicas of the canaries, at least 1 (v0.20.0 1fb7810,
# lines 794-803: every canary, even one that is not up yet; master aaac4e2,
# adjustStableMinReplicasForCanaries lines 872-900, since 22cbd37 #5984: only the canaries
# ``status.canaryStatuses`` reports ready). A canary's replicas are its own ``minReplicas``, else
# ceil(stable minReplicas x trafficPercent / 100) (canaryReplicaCount, both). Nothing is cut when
# the stable predictor sets no minReplicas. spec.canary[] does not exist before v0.20.0.
def canary_replicas(isvc: Obj, canary: Obj) -> int:
    """canaryReplicaCount: the fixed replicas of one spec.canary[] entry's Deployment."""
    own = canary["predictor"].get("minReplicas")
    if own is not None:
        return int(own)
    stable = isvc["spec"]["predictor"].get("minReplicas")
    stable = 1 if stable is None else stable
    return math.ceil(float(stable) * float(canary.get("trafficPercent", 0)) / 100)


def stable_min_replicas(isvc: Obj, kserve: KServe) -> int | None:
    """The ``minReplicas`` KServe hands the stable predictor's workload and scaler (None: unset)."""
    low: int | None = isvc["spec"]["predictor"].get("minReplicas")
    canaries = isvc["spec"].get("canary") or []
    if low is None or not canaries or not kserve.at_least("v0.20.0"):
        return low
    if kserve.version == "v0.20.0":
        total = sum(canary_replicas(isvc, c) for c in canaries)
        return max(low - total, 1)
    ready = {s["name"]: s.get("ready", False) for s in (isvc.get("status") or {}).get("canaryStatuses") or []}
    total = sum(canary_replicas(isvc, c) for c in canaries if ready.get(c["predictor"]["name"]))
    return max(low - total, 1) if total > 0 else low


@dataclass(frozen=True)
class ReplicaPlan:
    """What the controller builds for a Standard-mode predictor."""

    deployment_replicas: int | None
    """spec.replicas on the Deployment; None = left to a scaler (Kubernetes starts it at 1)."""
    scaler: str | None
    """'HorizontalPodAutoscaler' (class hpa), 'ScaledObject' (keda) or None."""
    min_replicas: int
    max_replicas: int

    def pods(self) -> tuple[int, int]:
        """The pod count range that will really run, before any external scaler acts."""
        if self.deployment_replicas is not None:
            return self.deployment_replicas, self.deployment_replicas
        if self.scaler is None:
            return 1, 1
        return self.min_replicas, self.max_replicas


def replica_plan(isvc: Obj, kserve: KServe) -> ReplicaPlan:
    """The stable predictor's plan, after the canary cut of ``stable_min_replicas``."""
    predictor = isvc["spec"]["predictor"]
    klass = (isvc["metadata"].get("annotations") or {}).get(AUTOSCALER_CLASS, "hpa")
    low = stable_min_replicas(isvc, kserve)
    # KEDA keeps a minimum of 0 (scale to zero); the HPA and the Deployment paths raise it to 1.
    floor = 1 if low is None or (low < 1 and klass != "keda") else low
    high = max(predictor.get("maxReplicas", 0), floor)
    pinned: int | None = None
    if low is not None:
        # v0.15.0 pinned the 'external' class (and fought KEDA); v0.15.1+ pins only 'none';
        # v0.14.0 pinned nothing.
        old_external = kserve.version == "v0.15.0" and klass == "external"
        if old_external or (kserve.at_least("v0.15.1") and klass == "none"):
            pinned = low
    scaler = {"hpa": "HorizontalPodAutoscaler", "keda": "ScaledObject"}.get(klass)
    return ReplicaPlan(pinned, scaler, floor, high)


def stable_floor(isvc: Obj, kserve: KServe) -> int:
    """The fewest stable pods KServe (and its scaler) will keep: the lower end of ``pods()``."""
    return replica_plan(isvc, kserve).pods()[0]


# -- Canary traffic in Standard mode ----------------------------------------------------------
# pkg/controller/v1beta1/inferenceservice/reconcilers/ingress/httproute_reconciler.go
# (applyCanaryWeights, Reconcile): master only (#5912, after v0.20.0). v0.20.0 creates the
# canary Deployments (components/predictor.go reconcileCanaryDeployments) but routes nothing
# to them: the <isvc>-predictor Service selects the stable pods only. The split is applied
# only to HTTPRoutes (ingress.enableGatewayApi), which are not created for cluster-local
# services or with disableIngressCreation; a not-ready canary gets no weight.
def canary_weights(isvc: Obj, kserve: KServe, ingress: Obj) -> dict[str, int] | None:
    """Backend Service -> weight in the predictor HTTPRoute, or None when nothing is split."""
    if not isvc["spec"].get("canary"):
        return None
    if kserve.version != "master" or not ingress.get("enableGatewayApi"):
        return None
    labels = isvc["metadata"].get("labels") or {}
    if labels.get("networking.kserve.io/visibility") == "cluster-local":
        return None
    if ingress.get("ingressDomain") == "svc.cluster.local" or ingress.get("disableIngressCreation"):
        return None
    name = isvc["metadata"]["name"]
    ready = {s["name"]: s.get("ready", False) for s in (isvc.get("status") or {}).get("canaryStatuses") or []}
    stable = predictor_service(name, isvc["spec"]["predictor"].get("name"))
    weights = {stable: 100}
    for c in isvc["spec"]["canary"]:
        if ready.get(c["predictor"]["name"]):
            weights[predictor_service(name, c["predictor"]["name"])] = c["trafficPercent"]
            weights[stable] -= c["trafficPercent"]
    return weights


def predictor_service(isvc_name: str, predictor_name: str | None = None) -> str:
    """constants.PredictorServiceName: the Deployment and Service of a (named) predictor."""
    return f"{isvc_name}-{predictor_name}-predictor" if predictor_name else f"{isvc_name}-predictor"


def ingress_config(enable_gateway_api: bool, **extra: Any) -> Obj:
    """The ``ingress`` key of the inferenceservice-config ConfigMap (config/configmap/inferenceservice.yaml)."""
    return {"enableGatewayApi": enable_gateway_api, "ingressDomain": "example.com", **extra}


def inferenceservice_config(ingress: Obj) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "inferenceservice-config", "namespace": "kserve"},
        "data": {"ingress": json.dumps(ingress)},
    }

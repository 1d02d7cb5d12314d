"""Canaries on ``serving.kserve.io/v1beta1`` InferenceServices, in the two KServe modes.

Knative (Serverless): ``spec.predictor.canaryTrafficPercent`` splits traffic between the
latest revision (canary) and the previous rolled-out one (``prev`` tag); revisions are read
from ``status.components.predictor.traffic``. Promote removes the field (100 % to latest),
rollback sets it to 0.

Standard (KServe >= 0.20): ``spec.canary[]`` holds named canaries, each a predictor overlay
and a ``trafficPercent``; status is in ``status.canaryStatuses``. Promote retargets the stable
predictor to the canary (its name and model) and empties the list; rollback removes the entry.

Every change is a JSON merge patch (the CustomObjectsApi default content type), built by the
pure ``*_patch`` functions below so tests can validate each one against the CRD schema.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from serving.rollout.prometheus import Side
from serving.rollout.state import Revision, RolloutError, TrafficState

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
PLURAL = "inferenceservices"
CRD_NAME = f"{PLURAL}.{GROUP}"
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
DEFAULT_CANARY_NAME = "canary"

# Predictor keys that carry a storageUri: the generic ``model`` and the framework shortcuts.
MODEL_KEYS = (
    "model", "xgboost", "onnx", "sklearn", "lightgbm", "pytorch", "tensorflow",
    "triton", "huggingface", "paddle", "pmml",
)  # fmt: skip

Obj = dict[str, Any]


def deployment_mode(isvc: Obj) -> str:
    """``knative`` or ``standard``, from the controller's status, else the annotation."""
    raw = (isvc.get("status") or {}).get("deploymentMode") or (
        (isvc.get("metadata") or {}).get("annotations") or {}
    ).get(MODE_ANNOTATION, "")
    if raw in ("RawDeployment", "Standard"):
        return "standard"
    if raw in ("", "Serverless", "Knative"):
        return "knative"
    raise RolloutError(f"deployment mode '{raw}' has no canary support here (use --mode inpod)")


def crd_has_canary_list(crd: Obj) -> bool:
    """True when the installed InferenceService CRD has ``spec.canary`` (KServe >= 0.20)."""
    for version in crd.get("spec", {}).get("versions", []):
        if version.get("name") != VERSION:
            continue
        spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
        return "canary" in spec.get("properties", {})
    return False


def _model_key(predictor: Obj) -> str:
    for key in MODEL_KEYS:
        if isinstance(predictor.get(key), dict):
            return key
    raise RolloutError("the predictor has no model section with a storageUri (model, xgboost, onnx, ...)")


def _pod_matcher(namespace: str, prefix: str) -> str:
    # Deployment pods are <deployment>-<replicaset hash>-<pod hash>; regexes are anchored.
    return f'namespace="{namespace}",pod=~"{prefix}-[a-z0-9]+-[a-z0-9]+"'


# -- Knative ---------------------------------------------------------------------------------
def knative_start_patch(isvc: Obj, storage_uri: str, percent: int) -> Obj:
    key = _model_key(isvc["spec"]["predictor"])
    return {"spec": {"predictor": {"canaryTrafficPercent": percent, key: {"storageUri": storage_uri}}}}


def knative_percent_patch(percent: int) -> Obj:
    return {"spec": {"predictor": {"canaryTrafficPercent": percent}}}


def knative_promote_patch() -> Obj:
    return {"spec": {"predictor": {"canaryTrafficPercent": None}}}


def knative_state(isvc: Obj) -> TrafficState:
    name = isvc["metadata"]["name"]
    ns = isvc["metadata"].get("namespace", "default")
    component = ((isvc.get("status") or {}).get("components") or {}).get("predictor") or {}
    latest_ready = component.get("latestReadyRevision")
    revisions: list[Revision] = []
    for entry in component.get("traffic") or []:
        rev = entry.get("revisionName", "?")
        role = "canary" if entry.get("latestRevision") else "stable"
        # Only the latest revision can still be coming up; Knative routes to the tagged
        # previous revision only while it is ready.
        ready = rev == latest_ready or role == "stable"
        revisions.append(Revision(rev, int(entry.get("percent") or 0), ready, role))
    spec_percent = isvc["spec"]["predictor"].get("canaryTrafficPercent")
    notes: list[str] = []
    if len(revisions) < 2:
        # One revision: no canary (or the controller has not reported the split yet).
        revisions = [Revision(r.name, r.percent, r.ready, "stable") for r in revisions]
        if spec_percent is not None:
            notes.append(f"spec asks for {spec_percent}% canary; status shows no split yet")
    stable = next((r for r in revisions if r.role == "stable"), None)
    canary = next((r for r in revisions if r.role == "canary"), None)
    sides = (
        Side("stable", _pod_matcher(ns, f"{stable.name}-deployment") if stable else 'pod="none"'),
        Side("canary", _pod_matcher(ns, f"{canary.name}-deployment") if canary else 'pod="none"'),
    )
    return TrafficState("knative", f"{ns}/{name}", tuple(revisions), sides, tuple(notes))


# -- Standard (spec.canary[]) --------------------------------------------------------------
def standard_start_patch(isvc: Obj, storage_uri: str, percent: int, canary_name: str) -> Obj:
    predictor = isvc["spec"]["predictor"]
    key = _model_key(predictor)
    model = copy.deepcopy(predictor[key])
    model["storageUri"] = storage_uri
    # In spec.canary[] the model section is a full container: the CRD requires its name.
    model.setdefault("name", "kserve-container")
    others = [c for c in isvc["spec"].get("canary") or [] if c["predictor"].get("name") != canary_name]
    entry = {"trafficPercent": percent, "predictor": {"name": canary_name, key: model}}
    return {"spec": {"canary": [*others, entry]}}


def _find_canary(isvc: Obj, canary_name: str | None) -> Obj:
    canaries = isvc["spec"].get("canary") or []
    if canary_name is not None:
        canaries = [c for c in canaries if c["predictor"].get("name") == canary_name]
    if not canaries:
        raise RolloutError(
            f"{isvc['metadata']['name']} has no canary" + (f" '{canary_name}'" if canary_name else "")
        )
    if len(canaries) > 1:
        names = ", ".join(c["predictor"].get("name", "?") for c in canaries)
        raise RolloutError(f"several canaries ({names}); pick one with --canary-name")
    found: Obj = canaries[0]
    return found


def standard_percent_patch(isvc: Obj, percent: int, canary_name: str | None) -> Obj:
    target = _find_canary(isvc, canary_name)
    canaries = [
        {**c, "trafficPercent": percent} if c is target else c for c in isvc["spec"].get("canary") or []
    ]
    return {"spec": {"canary": canaries}}


def standard_promote_patch(isvc: Obj, canary_name: str | None) -> Obj:
    target = _find_canary(isvc, canary_name)
    # The canary's fields overlay the stable predictor (as the controller builds it), and the
    # stable predictor takes the canary's name, so the canary Deployment is kept, not restarted.
    return {"spec": {"predictor": copy.deepcopy(target["predictor"]), "canary": []}}


def standard_rollback_patch(isvc: Obj, canary_name: str | None) -> Obj:
    target = _find_canary(isvc, canary_name)
    rest = [c for c in isvc["spec"].get("canary") or [] if c is not target]
    return {"spec": {"canary": rest}}


def standard_state(isvc: Obj, canary_name: str | None) -> TrafficState:
    name = isvc["metadata"]["name"]
    ns = isvc["metadata"].get("namespace", "default")
    status = isvc.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    stable_name = isvc["spec"]["predictor"].get("name")
    stable_deploy = f"{name}-{stable_name}-predictor" if stable_name else f"{name}-predictor"
    canaries = isvc["spec"].get("canary") or []
    if canary_name is not None:
        canaries = [c for c in canaries if c["predictor"].get("name") == canary_name]
    statuses = {s["name"]: s for s in status.get("canaryStatuses") or []}
    revisions: list[Revision] = []
    canary_total = 0
    canary_deploy: str | None = None
    for c in canaries:
        cname = c["predictor"].get("name", "?")
        st = statuses.get(cname, {})
        canary_total += int(c.get("trafficPercent", 0))
        canary_deploy = f"{name}-{cname}-predictor"
        revisions.append(
            Revision(cname, int(c.get("trafficPercent", 0)), bool(st.get("ready")), "canary", canary_deploy)
        )
    stable = Revision(
        stable_name or "predictor",
        100 - canary_total,
        conditions.get("PredictorReady", conditions.get("Ready")) == "True",
        "stable",
        stable_deploy,
    )
    notes = (
        ("several canaries: analysis uses the last; pick one with --canary-name",)
        if len(canaries) > 1
        else ()
    )
    sides = (
        Side("stable", _pod_matcher(ns, stable_deploy)),
        Side("canary", _pod_matcher(ns, canary_deploy) if canary_deploy else 'pod="none"'),
    )
    return TrafficState("standard", f"{ns}/{name}", (stable, *revisions), sides, notes)


# -- the Kubernetes side ---------------------------------------------------------------------
def load_api_client(context: str | None = None) -> Any:
    """An ApiClient from the kubeconfig (``KUBECONFIG`` or ~/.kube/config), else in-cluster."""
    from serving.extras import missing_extra

    if problem := missing_extra("serving rollout"):
        raise RolloutError(problem)
    from kubernetes import client, config

    try:
        return config.new_client_from_config(context=context)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return client.ApiClient()


class InferenceServiceTarget:
    """Drives one InferenceService with the ``kubernetes`` client's CustomObjectsApi."""

    def __init__(
        self,
        api_client: Any,
        name: str,
        namespace: str = "default",
        mode: str | None = None,
        canary_name: str | None = None,
    ) -> None:
        from kubernetes import client

        self.api = client.CustomObjectsApi(api_client)
        self.name = name
        self.namespace = namespace
        self.forced_mode = mode
        self.canary_name = canary_name

    def get(self) -> Obj:
        from kubernetes.client.exceptions import ApiException

        try:
            obj: Obj = self.api.get_namespaced_custom_object(  # type: ignore[assignment]
                GROUP, VERSION, self.namespace, PLURAL, self.name
            )
        except ApiException as exc:
            raise RolloutError(
                f"cannot read InferenceService {self.namespace}/{self.name}: {exc.status} {exc.reason}"
            ) from None
        return obj

    def patch(self, body: Obj) -> Obj:
        from kubernetes.client.exceptions import ApiException

        try:
            obj: Obj = self.api.patch_namespaced_custom_object(  # type: ignore[assignment]
                GROUP, VERSION, self.namespace, PLURAL, self.name, body
            )
        except ApiException as exc:
            raise RolloutError(
                f"patch refused for {self.namespace}/{self.name}: {exc.status} {exc.body or exc.reason}"
            ) from None
        return obj

    def mode(self, isvc: Obj) -> str:
        return self.forced_mode or deployment_mode(isvc)

    def state(self) -> TrafficState:
        isvc = self.get()
        if self.mode(isvc) == "knative":
            return knative_state(isvc)
        return standard_state(isvc, self.canary_name)

    def check_canary_support(self) -> None:
        """Standard mode needs KServe >= 0.20 (``spec.canary`` in the CRD). Without permission
        to read CRDs the check is skipped and the API server's validation decides."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        try:
            raw: Any = client.ApiextensionsV1Api(self.api.api_client).read_custom_resource_definition(
                CRD_NAME, _preload_content=False
            )
        except ApiException as exc:
            if exc.status in (401, 403):
                return
            raise RolloutError(f"cannot read CRD {CRD_NAME}: {exc.status} {exc.reason}") from None
        if not crd_has_canary_list(json.loads(raw.data)):
            raise RolloutError(
                "this cluster's InferenceService CRD has no spec.canary (KServe < 0.20): "
                "use --mode inpod --server URL to roll out with the server's traffic policy"
            )

    def start(self, percent: int, storage_uri: str | None, canary_version: str | None) -> None:
        if not storage_uri:
            raise RolloutError("start needs --storage-uri for an InferenceService")
        isvc = self.get()
        if self.mode(isvc) == "knative":
            self.patch(knative_start_patch(isvc, storage_uri, percent))
        else:
            self.check_canary_support()
            name = self.canary_name or DEFAULT_CANARY_NAME
            self.patch(standard_start_patch(isvc, storage_uri, percent, name))

    def set_percent(self, percent: int) -> None:
        isvc = self.get()
        if self.mode(isvc) == "knative":
            self.patch(knative_percent_patch(percent))
        else:
            self.patch(standard_percent_patch(isvc, percent, self.canary_name))

    def promote(self) -> None:
        isvc = self.get()
        if self.mode(isvc) == "knative":
            self.patch(knative_promote_patch())
        else:
            self.patch(standard_promote_patch(isvc, self.canary_name))

    def rollback(self) -> None:
        isvc = self.get()
        if self.mode(isvc) == "knative":
            self.patch(knative_percent_patch(0))
        else:
            self.patch(standard_rollback_patch(isvc, self.canary_name))

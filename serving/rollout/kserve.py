"""Canaries on ``serving.kserve.io/v1beta1`` InferenceServices, in the two KServe modes.

Knative (Serverless): ``spec.predictor.canaryTrafficPercent`` splits traffic between the
latest revision (canary) and the previous rolled-out one (``prev`` tag); revisions are read
from ``status.components.predictor.traffic``. Promote removes the field (100 % to latest),
rollback sets it to 0.

Standard (RawDeployment): ``spec.canary[]`` holds named canaries, each a predictor overlay and
a ``trafficPercent``; KServe v0.20.0 runs a Deployment per canary, but only a KServe built after
v0.20.0 splits traffic to it, and only on Gateway API HTTPRoutes (``applyCanaryWeights``,
``ingress.enableGatewayApi``). So every Standard command first checks the controller version
and the ingress config, and the live split is read from the ``<isvc>-predictor`` HTTPRoute's
backend weights, never from the spec. Promote rolls the stable predictor to the canary's model
(the webhook forbids a container ``name`` there, and keeping the stable predictor's own name
keeps its Deployment, Service and scalers) and removes the entry; rollback removes the entry.
While a canary runs, KServe lowers the stable predictor's minReplicas by the canary's replicas;
``start --keep-stable-capacity`` raises it by as much for the rollout (see "Stable capacity").

Every change is a JSON merge patch (the CustomObjectsApi default content type), built by the
pure ``*_patch`` functions below so tests can validate each one against the CRD schema.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import re
from typing import Any

from serving.rollout.prometheus import Side
from serving.rollout.state import Revision, RolloutError, StableCapacity, TrafficState

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
PLURAL = "inferenceservices"
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
# KServe's own names (pkg/constants/constants.go) and the first controller version whose
# HTTPRoutes carry canary weights (applyCanaryWeights landed on master after v0.20.0).
KSERVE_NAMESPACE = "kserve"
CONTROLLER_DEPLOYMENT = "kserve-controller-manager"
CONFIG_MAP = "inferenceservice-config"
SPLIT_SINCE = (0, 21, 0)
GATEWAY_GROUP, GATEWAY_VERSION = "gateway.networking.k8s.io", "v1"


def predictor_service(isvc_name: str, predictor_name: str | None = None) -> str:
    """KServe's PredictorServiceName: the Deployment and Service of a (named) predictor."""
    return f"{isvc_name}-{predictor_name}-predictor" if predictor_name else f"{isvc_name}-predictor"


def default_canary_name(isvc: Obj) -> str:
    """``canary``, unless the stable predictor already carries that name (the webhook refuses
    a canary named like the stable predictor)."""
    taken = isvc["spec"]["predictor"].get("name")
    return DEFAULT_CANARY_NAME if taken != DEFAULT_CANARY_NAME else f"{DEFAULT_CANARY_NAME}-2"


def standard_start_patch(
    isvc: Obj, storage_uri: str, percent: int, canary_name: str, keep_capacity: bool = False
) -> Obj:
    """Add (or replace) the canary entry. With ``keep_capacity`` the same patch raises the stable
    minimum by the canary's replicas and records the configured values (``keep_capacity_patch``)."""
    predictor = isvc["spec"]["predictor"]
    key = _model_key(predictor)
    model = copy.deepcopy(predictor[key])
    model["storageUri"] = storage_uri
    # In spec.canary[] the model section is a full container: the CRD requires its name.
    model.setdefault("name", "kserve-container")
    others = [c for c in isvc["spec"].get("canary") or [] if c["predictor"].get("name") != canary_name]
    entry: Obj = {"trafficPercent": percent, "predictor": {"name": canary_name, key: model}}
    patch: Obj = {"spec": {"canary": [*others, entry]}}
    if keep_capacity or kept_replicas(isvc) is not None:
        _merge(patch, keep_capacity_patch(isvc, entry))
    return patch


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
    moved: Obj = {**target, "trafficPercent": percent}
    if kept_replicas(isvc) is not None:
        # The canary's replicas follow its share (as KServe's own count would): so does the raise.
        moved["predictor"] = {k: v for k, v in target["predictor"].items() if k != "minReplicas"}
    canaries = [moved if c is target else c for c in isvc["spec"].get("canary") or []]
    patch: Obj = {"spec": {"canary": canaries}}
    if kept_replicas(isvc) is not None:
        _merge(patch, keep_capacity_patch(isvc, moved))
    return patch


def standard_promote_patch(isvc: Obj, canary_name: str | None) -> Obj:
    """The stable predictor takes the canary's model; everything else of the stable predictor
    (its name, replicas, autoscaling) stays. The model carries no container ``name`` (KServe
    refuses one in the stable predictor, v0.16.0+) and the stable predictor keeps its own name,
    so the next canary may again be called ``canary`` and the stable Deployment, Service,
    HTTPRoute backend and scaler keep their names: KServe rolls the stable pods to the model."""
    target = _find_canary(isvc, canary_name)
    stable = isvc["spec"]["predictor"]
    canary_key = _model_key(target["predictor"])
    model = copy.deepcopy(target["predictor"][canary_key])
    model["name"] = None  # merge patch: remove it, whether or not an older promotion set it
    predictor: Obj = {canary_key: model}
    stable_key = _model_key(stable)
    if stable_key != canary_key:
        predictor[stable_key] = None
    rest = [c for c in isvc["spec"].get("canary") or [] if c is not target]
    return _merge({"spec": {"predictor": predictor, "canary": rest}}, restore_capacity_patch(isvc))


def standard_rollback_patch(isvc: Obj, canary_name: str | None) -> Obj:
    target = _find_canary(isvc, canary_name)
    rest = [c for c in isvc["spec"].get("canary") or [] if c is not target]
    return _merge({"spec": {"canary": rest}}, restore_capacity_patch(isvc))


# -- Stable capacity during a Standard canary -------------------------------------------------
# While canaries run, KServe hands the stable predictor's Deployment (class none), HPA or KEDA
# ScaledObject its minReplicas minus the canaries' replicas, at least 1, and nothing less when
# the stable predictor sets no minReplicas (pkg/controller/v1beta1/inferenceservice/components/
# predictor.go reconcileRawDeployment). v0.20.0 (1fb7810, lines 794-803) counts every canary;
# later KServe (master aaac4e2, adjustStableMinReplicasForCanaries lines 872-900, #5984) only
# the ones status.canaryStatuses reports ready. A canary's replicas are its own minReplicas, else
# ceil(stable minReplicas x trafficPercent / 100) (canaryReplicaCount). A stable predictor sized
# for peak load thus loses that headroom for the whole rollout. tests/deploy/kserve_rules.py
# ports the same code from KServe; a test holds the two equal.
#
# ``--keep-stable-capacity`` raises the stable minReplicas (and maxReplicas, where the raise
# would pass it) by the canary's replicas, pins those on the canary entry (KServe would otherwise
# count them from the raised minimum), records the configured values in an annotation, follows
# every percent change, and restores them in the same patch that promotes or rolls back: the
# floor KServe applies stays at the configured minimum at every step.
READY_ONLY_SINCE = (0, 21, 0)
KEPT_ANNOTATION = "serving/kept-stable-replicas"


def canary_replicas(stable_min: int | None, canary: Obj) -> int:
    """KServe's canaryReplicaCount for one spec.canary[] entry."""
    own = (canary.get("predictor") or {}).get("minReplicas")
    if own is not None:
        return int(own)
    base = 1 if stable_min is None else stable_min
    return math.ceil(float(base) * float(canary.get("trafficPercent", 0)) / 100)


def counted_canary_replicas(isvc: Obj, version: tuple[int, int, int]) -> int:
    """The canary replicas KServe subtracts from the stable minimum at this KServe version."""
    low = isvc["spec"]["predictor"].get("minReplicas")
    canaries = isvc["spec"].get("canary") or []
    if version >= READY_ONLY_SINCE:
        ready = {
            s["name"]: s.get("ready", False) for s in (isvc.get("status") or {}).get("canaryStatuses") or []
        }
        canaries = [c for c in canaries if ready.get(c["predictor"].get("name"))]
    return sum(canary_replicas(low, c) for c in canaries)


def effective_stable_min(isvc: Obj, version: tuple[int, int, int]) -> int | None:
    """The minReplicas KServe gives the stable predictor's workload and scaler (None: unset)."""
    low: int | None = isvc["spec"]["predictor"].get("minReplicas")
    if low is None or not isvc["spec"].get("canary"):
        return low
    total = counted_canary_replicas(isvc, version)
    if version < READY_ONLY_SINCE or total > 0:
        return max(low - total, 1)
    return low


def kept_replicas(isvc: Obj) -> tuple[int, int | None] | None:
    """(minReplicas, maxReplicas) configured before ``--keep-stable-capacity`` raised them."""
    raw = ((isvc.get("metadata") or {}).get("annotations") or {}).get(KEPT_ANNOTATION)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        high = data.get("maxReplicas")
        return int(data["minReplicas"]), None if high is None else int(high)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise RolloutError(
            f'annotation {KEPT_ANNOTATION} is not {{"minReplicas": N, "maxReplicas": M}}: '
            "set the stable minReplicas by hand and remove it"
        ) from None


def keep_capacity_patch(isvc: Obj, entry: Obj) -> Obj:
    """Stable minReplicas (and maxReplicas where needed) = configured + the canary's replicas;
    the canary ``entry`` (already in the patch) gets those replicas pinned. Nothing when the
    stable predictor sets no minReplicas: KServe then lowers nothing."""
    predictor = isvc["spec"]["predictor"]
    kept = kept_replicas(isvc)
    low, high = kept if kept is not None else (predictor.get("minReplicas"), predictor.get("maxReplicas"))
    if low is None:
        return {}
    replicas = canary_replicas(low, entry)
    entry["predictor"]["minReplicas"] = replicas
    raised: Obj = {"minReplicas": low + replicas}
    if high:
        # The webhook refuses minReplicas above a non-zero maxReplicas.
        raised["maxReplicas"] = max(high, low + replicas)
    record = json.dumps({"minReplicas": low, "maxReplicas": high}, separators=(",", ":"))
    return {"metadata": {"annotations": {KEPT_ANNOTATION: record}}, "spec": {"predictor": raised}}


def restore_capacity_patch(isvc: Obj) -> Obj:
    """The configured stable replicas back, and the record removed (nothing when not kept)."""
    kept = kept_replicas(isvc)
    if kept is None:
        return {}
    low, high = kept
    return {
        "metadata": {"annotations": {KEPT_ANNOTATION: None}},
        "spec": {"predictor": {"minReplicas": low, "maxReplicas": high}},
    }


def stable_capacity(isvc: Obj, version: tuple[int, int, int]) -> StableCapacity | None:
    """The stable predictor's minimum during the canaries, or None without canaries or minimum."""
    if not isvc["spec"].get("canary"):
        return None
    kept = kept_replicas(isvc)
    configured = kept[0] if kept is not None else isvc["spec"]["predictor"].get("minReplicas")
    effective = effective_stable_min(isvc, version)
    if configured is None or effective is None:
        return None
    return StableCapacity(configured, effective, counted_canary_replicas(isvc, version), kept is not None)


def _merge(patch: Obj, extra: Obj) -> Obj:
    """Deep-merge ``extra`` into the merge patch ``patch`` (both JSON merge patches)."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(patch.get(key), dict):
            _merge(patch[key], value)
        else:
            patch[key] = value
    return patch


def route_weights(route: Obj | None) -> dict[str, int] | None:
    """Backend Service -> weight in the first rule of an HTTPRoute (one unweighted backend
    takes everything), or None without a route."""
    if route is None:
        return None
    for rule in (route.get("spec") or {}).get("rules") or []:
        refs = rule.get("backendRefs") or []
        if not refs:
            continue
        if len(refs) == 1:
            return {refs[0]["name"]: 100}
        return {ref["name"]: int(ref.get("weight", 1)) for ref in refs}
    return None


def standard_state(
    isvc: Obj,
    canary_name: str | None,
    route: Obj | None = None,
    version: tuple[int, int, int] = READY_ONLY_SINCE,
) -> TrafficState:
    """The split the cluster applies, from the predictor HTTPRoute's backend weights, and the
    stable predictor's minimum as the KServe ``version`` applies it during the canaries."""
    name = isvc["metadata"]["name"]
    ns = isvc["metadata"].get("namespace", "default")
    status = isvc.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    stable_name = isvc["spec"]["predictor"].get("name")
    stable_deploy = predictor_service(name, stable_name)
    all_canaries = isvc["spec"].get("canary") or []
    canaries = all_canaries
    if canary_name is not None:
        canaries = [c for c in canaries if c["predictor"].get("name") == canary_name]
    statuses = {s["name"]: s for s in status.get("canaryStatuses") or []}
    weights = route_weights(route)
    notes: list[str] = []
    if weights is None:
        weights = {stable_deploy: 100}
        if all_canaries:
            notes.append(f"no HTTPRoute {predictor_service(name)} yet: no traffic is split")
    total = sum(weights.values()) or 1
    applied = {svc: round(100 * w / total) for svc, w in weights.items()}
    revisions: list[Revision] = []
    canary_deploy: str | None = None
    for c in canaries:
        cname = c["predictor"].get("name", "?")
        canary_deploy = predictor_service(name, cname)
        percent = applied.get(canary_deploy, 0)
        wished = int(c.get("trafficPercent", 0))
        ready = bool(statuses.get(cname, {}).get("ready"))
        if percent != wished:
            why = "" if ready else " (canary not ready: KServe routes nothing to it yet)"
            notes.append(f"spec asks {wished}% for {cname}; the HTTPRoute applies {percent}%{why}")
        revisions.append(Revision(cname, percent, ready, "canary", canary_deploy))
    stable = Revision(
        stable_name or "predictor",
        applied.get(stable_deploy, 0),
        conditions.get("PredictorReady", conditions.get("Ready")) == "True",
        "stable",
        stable_deploy,
    )
    if len(canaries) > 1:
        notes.append("several canaries: analysis uses the last; pick one with --canary-name")
    sides = (
        Side("stable", _pod_matcher(ns, stable_deploy)),
        Side("canary", _pod_matcher(ns, canary_deploy) if canary_deploy else 'pod="none"'),
    )
    return TrafficState(
        "standard",
        f"{ns}/{name}",
        (stable, *revisions),
        sides,
        tuple(notes),
        capacity=stable_capacity(isvc, version),
    )


def controller_version(image: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) from the controller image tag, None for a tag without one."""
    ref = image.split("@", 1)[0]
    tag = ref.rsplit(":", 1)[1] if ":" in ref.rsplit("/", 1)[-1] else ""
    match = re.match(r"^v?(\d+)\.(\d+)\.(\d+)", tag)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def parse_version(text: str) -> tuple[int, int, int]:
    match = re.match(r"^v?(\d+)\.(\d+)(?:\.(\d+))?$", text.strip())
    if not match:
        raise RolloutError(f"--kserve-version '{text}' is not a version like 0.21.0")
    return int(match[1]), int(match[2]), int(match[3] or 0)


def split_problem(version: tuple[int, int, int], ingress: Obj, isvc: Obj) -> str | None:
    """Why KServe will not split traffic for this InferenceService's spec.canary[], or None.
    Mirrors httproute_reconciler.go (Reconcile, applyCanaryWeights) at kserve master aaac4e2."""
    shown = ".".join(map(str, version))
    if version < SPLIT_SINCE:
        return (
            f"KServe {shown} runs Standard-mode canary Deployments but splits no traffic to them "
            "(the weighted HTTPRoute came after v0.20.0): upgrade KServe or use --mode inpod"
        )
    if not ingress.get("enableGatewayApi"):
        return (
            f"ingress.enableGatewayApi is false in {CONFIG_MAP}: KServe splits Standard-mode canary "
            "traffic only on Gateway API HTTPRoutes; enable it or use --mode inpod"
        )
    if ingress.get("disableIngressCreation"):
        return f"ingress.disableIngressCreation is true in {CONFIG_MAP}: no HTTPRoute, no split; use --mode inpod"
    labels = (isvc.get("metadata") or {}).get("labels") or {}
    if (
        labels.get("networking.kserve.io/visibility") == "cluster-local"
        or ingress.get("ingressDomain") == "svc.cluster.local"
    ):
        return (
            "the InferenceService is cluster-local: KServe makes no HTTPRoute, so no split; use --mode inpod"
        )
    return None


# -- the Kubernetes side ---------------------------------------------------------------------
def load_api_client(context: str | None = None) -> Any:
    """An ApiClient from the kubeconfig (``KUBECONFIG`` or ~/.kube/config), else in-cluster."""
    from serving.extras import missing_extra

    if problem := missing_extra("serving rollout"):
        raise RolloutError(problem)
    from kubernetes import client, config

    try:
        return config.new_client_from_config(context=context)  # type: ignore[no-untyped-call]
    except config.ConfigException as outside:
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException as inside:
            # one line, as every CLI failure: neither way to reach a cluster worked
            raise RolloutError(
                f"no Kubernetes cluster to talk to: kubeconfig ({outside}) and in-cluster ({inside}); "
                "set KUBECONFIG, or use --mode inpod with --server"
            ) from None
        return client.ApiClient()


class InferenceServiceTarget:
    """Drives one InferenceService with the ``kubernetes`` client (CustomObjectsApi for the
    InferenceService and HTTPRoute, plain reads of KServe's controller Deployment and ConfigMap).
    Every API call it makes is in tests/rollout; the chart's RBAC Role is derived from them."""

    def __init__(
        self,
        api_client: Any,
        name: str,
        namespace: str = "default",
        mode: str | None = None,
        canary_name: str | None = None,
        kserve_namespace: str = KSERVE_NAMESPACE,
        kserve_version: str | None = None,
        keep_stable_capacity: bool = False,
    ) -> None:
        from kubernetes import client

        self.api = client.CustomObjectsApi(api_client)
        self.name = name
        self.namespace = namespace
        self.forced_mode = mode
        self.canary_name = canary_name
        self.kserve_namespace = kserve_namespace
        self.kserve_version = parse_version(kserve_version) if kserve_version else None
        self.keep_stable_capacity = keep_stable_capacity

    def _read(self, what: str, call: Any, *args: Any) -> Obj | None:
        """GET through a generated client method, as plain JSON; None on 404."""
        from kubernetes.client.exceptions import ApiException

        try:
            raw = call(*args, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            hint = " (the chart's rbac.rollout Role grants it)" if exc.status in (401, 403) else ""
            raise RolloutError(f"cannot read {what}: {exc.status} {exc.reason}{hint}") from None
        obj: Obj = json.loads(raw.data)
        return obj

    def get(self) -> Obj:
        obj = self._read(
            f"InferenceService {self.namespace}/{self.name}",
            self.api.get_namespaced_custom_object,
            GROUP, VERSION, self.namespace, PLURAL, self.name,
        )  # fmt: skip
        if obj is None:
            raise RolloutError(f"cannot read InferenceService {self.namespace}/{self.name}: 404 Not Found")
        return obj

    def patch(self, body: Obj) -> Obj:
        from kubernetes.client.exceptions import ApiException

        try:
            obj: Obj = self.api.patch_namespaced_custom_object(  # type: ignore[assignment]
                GROUP, VERSION, self.namespace, PLURAL, self.name, body
            )
        except ApiException as exc:
            raise RolloutError(
                f"patch refused for {self.namespace}/{self.name}: {exc.status} {_reason(exc)}"
            ) from None
        return obj

    def mode(self, isvc: Obj) -> str:
        return self.forced_mode or deployment_mode(isvc)

    def route(self) -> Obj | None:
        return self._read(
            f"HTTPRoute {self.namespace}/{predictor_service(self.name)}",
            self.api.get_namespaced_custom_object,
            GATEWAY_GROUP, GATEWAY_VERSION, self.namespace, "httproutes", predictor_service(self.name),
        )  # fmt: skip

    def state(self) -> TrafficState:
        isvc = self.get()
        if self.mode(isvc) == "knative":
            return knative_state(isvc)
        # Without a readable version: a KServe that splits traffic, the only kind `start` accepts.
        version = READY_ONLY_SINCE
        if isvc["spec"].get("canary"):
            with contextlib.suppress(RolloutError):
                version = self.cluster_version()
        return standard_state(isvc, self.canary_name, self.route(), version)

    def cluster_version(self) -> tuple[int, int, int]:
        if self.kserve_version is not None:
            return self.kserve_version
        from kubernetes import client

        where = f"{self.kserve_namespace}/{CONTROLLER_DEPLOYMENT}"
        deployment = self._read(
            f"the KServe controller Deployment {where} to learn the KServe version",
            client.AppsV1Api(self.api.api_client).read_namespaced_deployment,
            CONTROLLER_DEPLOYMENT, self.kserve_namespace,
        )  # fmt: skip
        if deployment is None:
            raise RolloutError(
                f"no KServe controller Deployment {where}: pass --kserve-namespace or --kserve-version"
            )
        containers = deployment["spec"]["template"]["spec"]["containers"]
        image = next((c["image"] for c in containers if c.get("name") == "manager"), containers[0]["image"])
        version = controller_version(image)
        if version is None:
            raise RolloutError(f"cannot tell the KServe version from image '{image}': pass --kserve-version")
        self.kserve_version = version  # one read per command
        return version

    def ingress(self) -> Obj:
        from kubernetes import client

        where = f"{self.kserve_namespace}/{CONFIG_MAP}"
        config = self._read(
            f"ConfigMap {where}",
            client.CoreV1Api(self.api.api_client).read_namespaced_config_map,
            CONFIG_MAP, self.kserve_namespace,
        )  # fmt: skip
        if config is None:
            raise RolloutError(f"no ConfigMap {where}: pass --kserve-namespace")
        try:
            ingress: Obj = json.loads((config.get("data") or {}).get("ingress") or "{}")
        except ValueError:
            raise RolloutError(f"the 'ingress' key of {where} is not JSON") from None
        return ingress

    def check_traffic_split(self) -> None:
        """Standard mode only: refuse, naming the missing piece, when KServe would not route
        any traffic to a spec.canary[] entry (old controller, no Gateway API, no HTTPRoute)."""
        isvc = self.get()
        if self.mode(isvc) != "standard":
            return
        problem = split_problem(self.cluster_version(), self.ingress(), isvc)
        if problem is not None:
            raise RolloutError(problem)

    def start(self, percent: int, storage_uri: str | None, canary_version: str | None) -> None:
        if not storage_uri:
            raise RolloutError("start needs --storage-uri for an InferenceService")
        isvc = self.get()
        if self.mode(isvc) == "knative":
            if self.keep_stable_capacity:
                raise RolloutError(
                    "--keep-stable-capacity is for Standard mode: Knative keeps each revision's own minimum"
                )
            self.patch(knative_start_patch(isvc, storage_uri, percent))
        else:
            self.check_traffic_split()
            name = self.canary_name or default_canary_name(isvc)
            self.patch(standard_start_patch(isvc, storage_uri, percent, name, self.keep_stable_capacity))

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


def _reason(exc: Any) -> str:
    """The API server's (or an admission webhook's) message, else the HTTP reason."""
    try:
        message = json.loads(exc.body or "{}").get("message")
    except ValueError:
        message = None
    return str(message or exc.body or exc.reason)

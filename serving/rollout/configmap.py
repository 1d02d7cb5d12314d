"""In-pod fleet mode on Kubernetes: the traffic-policy store is a ConfigMap.

The chart creates one ConfigMap per release with a key ``<model>.yaml`` per model, mounts it
as a directory into every pod of the ServingRuntime (``SERVING_TRAFFIC_POLICY_DIR``), and
names it on each InferenceService in the annotation ``serving/traffic-policy-configmap``.
The CLI owns the ``data.<model>.yaml`` keys: it patches them (JSON merge patch, guarded by
the ConfigMap's ``resourceVersion`` so two writers never hand out one generation), then
reads every ready pod of the InferenceService through the API server's pod proxy until all
report the new generation. The kubelet updates a mounted ConfigMap within its sync period
plus its cache TTL (about a minute by default), so convergence takes that long, not the
server's poll interval.

Calls (and so the RBAC verbs the CLI needs): ``get`` inferenceservices, ``get``/``patch``
configmaps, ``list`` pods, ``get`` pods/proxy. All go through the ``kubernetes`` client's
ApiClient, which tests replace below the transport (tests/rollout/kube_fake.py).
"""

from __future__ import annotations

import json
from typing import Any

from serving.control.policy import StoredPolicy, StoreError, now_iso, parse_entry, policy_key, render_entry
from serving.rollout.kserve import GROUP, PLURAL, VERSION
from serving.rollout.servertarget import ReplicaView, traffic_path
from serving.rollout.state import RolloutError

ANNOTATION = "serving/traffic-policy-configmap"
ISVC_LABEL = "serving.kserve.io/inferenceservice"
MERGE_PATCH = "application/merge-patch+json"
CHANGED_BY = "serving rollout"


def _api_error(exc: Exception) -> str:
    """One line from an ApiException: status and the API server's (or our server's) message."""
    status = getattr(exc, "status", None)
    body = getattr(exc, "body", None)
    message = ""
    if body:
        try:
            doc = json.loads(body)
            message = str(doc.get("message") or doc.get("error") or "")
        except (ValueError, AttributeError):
            message = str(body)[:200]
    return f"{status or ''} {message or getattr(exc, 'reason', '') or 'no answer'}".strip()


def pod_ready(pod: dict[str, Any]) -> bool:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


class ConfigMapStore:
    """The ConfigMap named by an InferenceService's annotation, and the InferenceService's pods."""

    def __init__(
        self, api_client: Any, isvc: str, namespace: str, port: int = 8080, timeout: float = 10.0
    ) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.isvc = isvc
        self.namespace = namespace
        self.port = port
        self.timeout = timeout
        self._name: str | None = None

    @property
    def where(self) -> str:
        return f"InferenceService {self.namespace}/{self.isvc} (ConfigMap {self._name or '?'})"

    # -- the ConfigMap ---------------------------------------------------------------------------
    def configmap_name(self) -> str:
        if self._name is None:
            from kubernetes.client.exceptions import ApiException

            try:
                isvc: Any = self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, self.isvc
                )
            except ApiException as exc:
                raise RolloutError(
                    f"cannot read InferenceService {self.namespace}/{self.isvc}: {_api_error(exc)}"
                ) from None
            annotations = (isvc.get("metadata") or {}).get("annotations") or {}
            name = annotations.get(ANNOTATION)
            if not name:
                raise RolloutError(
                    f"InferenceService {self.namespace}/{self.isvc} has no '{ANNOTATION}' annotation: "
                    "deploy it with the chart's inPodTraffic set (it creates and mounts the policy "
                    "ConfigMap), or use --server URL for a single server"
                )
            self._name = str(name)
        return self._name

    def _configmap(self) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        name = self.configmap_name()
        try:
            response: Any = self.core.read_namespaced_config_map(name, self.namespace, _preload_content=False)
        except ApiException as exc:
            raise RolloutError(f"cannot read ConfigMap {self.namespace}/{name}: {_api_error(exc)}") from None
        doc: dict[str, Any] = json.loads(response.data)
        return doc

    @staticmethod
    def _entry(configmap: dict[str, Any], model: str) -> StoredPolicy | None:
        text = (configmap.get("data") or {}).get(policy_key(model))
        if text is None:
            return None
        try:
            return parse_entry(text)
        except StoreError as exc:
            name = (configmap.get("metadata") or {}).get("name")
            raise RolloutError(f"ConfigMap {name} key {policy_key(model)}: {exc}") from None

    def read(self, model: str) -> StoredPolicy | None:
        return self._entry(self._configmap(), model)

    def write(self, model: str, traffic: dict[str, Any] | None) -> int:
        from kubernetes.client.exceptions import ApiException

        for _ in range(5):
            configmap = self._configmap()
            try:
                current = self._entry(configmap, model)
            except RolloutError:
                current = None  # a broken entry is replaced by a good one
            entry = StoredPolicy(
                (current.generation if current is not None else 0) + 1, traffic, CHANGED_BY, now_iso()
            )
            patch = {
                # the write succeeds only on the version read: a concurrent writer makes it 409
                "metadata": {"resourceVersion": configmap["metadata"]["resourceVersion"]},
                "data": {policy_key(model): render_entry(entry)},
            }
            try:
                self.core.patch_namespaced_config_map(
                    self.configmap_name(), self.namespace, patch, _content_type=MERGE_PATCH
                )
            except ApiException as exc:
                if exc.status == 409:
                    continue
                raise RolloutError(
                    f"cannot patch ConfigMap {self.namespace}/{self.configmap_name()}: {_api_error(exc)}"
                ) from None
            return entry.generation
        raise RolloutError(f"ConfigMap {self.namespace}/{self.configmap_name()} kept changing under us")

    # -- the replicas ----------------------------------------------------------------------------
    def replicas(self, model: str) -> list[ReplicaView]:
        from kubernetes.client.exceptions import ApiException

        try:
            response: Any = self.core.list_namespaced_pod(
                self.namespace, label_selector=f"{ISVC_LABEL}={self.isvc}", _preload_content=False
            )
        except ApiException as exc:
            raise RolloutError(f"cannot list the pods of {self.isvc}: {_api_error(exc)}") from None
        pods = [p for p in json.loads(response.data).get("items", []) if pod_ready(p)]
        views = []
        for pod in sorted(pods, key=lambda p: str(p["metadata"]["name"])):
            name = str(pod["metadata"]["name"])
            try:
                answer: Any = self.core.connect_get_namespaced_pod_proxy(
                    f"{name}:{self.port}",
                    self.namespace,
                    path=traffic_path(model),
                    _preload_content=False,
                    _request_timeout=self.timeout,
                )
                doc = json.loads(answer.data)
            except ApiException as exc:
                views.append(ReplicaView(name, None, f"pod proxy: {_api_error(exc)}"))
                continue
            except ValueError as exc:
                views.append(ReplicaView(name, None, f"pod proxy: not JSON: {exc}"))
                continue
            views.append(
                ReplicaView(
                    name,
                    doc if isinstance(doc, dict) else None,
                    "" if isinstance(doc, dict) else "unexpected answer",
                )
            )
        return views

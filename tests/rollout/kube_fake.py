"""A recording stand-in for the API server, below the real ``kubernetes`` client.

Only the urllib3 pool manager is replaced: CustomObjectsApi, ApiClient and RESTClientObject
run unchanged, so what is recorded is the exact method, URL, headers and JSON body bytes the
CLI would put on the wire. The fake keeps one object per URL and applies JSON merge patches
(RFC 7386) to it, as the API server does, so multi-step flows can be followed.

InferenceService writes go through KServe's webhooks as ported in tests/deploy/kserve_rules.py
(the mutating default, then the validating check against the stored object); a refusal is
answered 403 with the webhook's message, as the API server relays it. With ``controller`` set,
each accepted write is then reconciled the way KServe's controller would: canary statuses,
and the ``<isvc>-predictor`` HTTPRoute's backend weights (``applyCanaryWeights``).
"""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import jsonschema
import urllib3
import yaml
from kubernetes import client

from tests.deploy import kserve_rules
from tests.deploy.kserve_rules import KServe, Refused
from tests.references import reference

HOST = "https://kube.invalid"


@dataclass
class Recorded:
    method: str
    url: str
    headers: dict[str, str]
    body: Any


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strip_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [strip_nulls(v) for v in value]
    return value


def without_required(schema: Any) -> Any:
    """The same schema with every ``required`` dropped: what a partial (patch) body must meet."""
    if isinstance(schema, dict):
        return {k: without_required(v) for k, v in schema.items() if k != "required"}
    if isinstance(schema, list):
        return [without_required(v) for v in schema]
    return schema


WEBHOOK = "inferenceservice.kserve-webhook-server.validator"


@dataclass
class Controller:
    """KServe's controller as far as the rollout CLI sees it."""

    kserve: KServe
    canaries_ready: bool = True


class FakePoolManager:
    def __init__(self, webhook: KServe | None = None) -> None:
        self.objects: dict[str, Any] = {}
        self.requests: list[Recorded] = []
        self.raw: dict[str, Any] = {}
        """path -> raw JSON answered as is (e.g. the CRD), or an int status to refuse."""
        self.webhook = webhook or KServe("master")
        self.controller: Controller | None = None
        self.refusals: list[str] = []

    def request(
        self, method: str, url: str, body: str | bytes | None = None, headers: Any = None, **_: Any
    ) -> urllib3.HTTPResponse:
        path = url.removeprefix(HOST).split("?")[0]
        parsed = json.loads(body) if body else None
        self.requests.append(Recorded(method, url, dict(headers or {}), parsed))
        if path in self.raw:
            answer = self.raw[path]
            if isinstance(answer, int):
                return self._respond(answer, {"kind": "Status", "code": answer})
            return self._respond(200, answer)
        if method == "GET":
            if path not in self.objects:
                return self._respond(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
            return self._respond(200, self.objects[path])
        if method == "PATCH":
            assert headers["Content-Type"] == "application/merge-patch+json"
            current = self.objects[path]
            updated = merge_patch(current, parsed)
            if "/inferenceservices/" in path:
                try:
                    updated = kserve_rules.admit_isvc(updated, self.webhook, old=current)
                except Refused as exc:
                    self.refusals.append(str(exc))
                    message = f'admission webhook "{WEBHOOK}" denied the request: {exc}'
                    return self._respond(403, {"kind": "Status", "code": 403, "message": message})
            updated["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
            self.objects[path] = updated
            if self.controller is not None and "/inferenceservices/" in path:
                self.reconcile(path)
            return self._respond(200, updated)
        raise AssertionError(f"unexpected {method} {url}")

    @staticmethod
    def _respond(status: int, payload: Any) -> urllib3.HTTPResponse:
        data = json.dumps(payload).encode()
        return urllib3.HTTPResponse(
            body=io.BytesIO(data),
            status=status,
            headers={"Content-Type": "application/json", "Content-Length": str(len(data))},
            preload_content=False,
        )

    def clear(self) -> None:
        pass

    def reconcile(self, path: str) -> None:
        """What KServe's controller writes after an accepted InferenceService change."""
        assert self.controller is not None
        isvc = self.objects[path]
        canaries = isvc["spec"].get("canary") or []
        status = isvc.setdefault("status", {})
        status["canaryStatuses"] = [
            {"name": c["predictor"]["name"], "ready": self.controller.canaries_ready,
             "trafficPercent": c["trafficPercent"]}
            for c in canaries
        ]  # fmt: skip
        meta = isvc["metadata"]
        config = self.objects.get(configmap_path("kserve", "inferenceservice-config"))
        ingress = json.loads(config["data"]["ingress"]) if config else {}
        route_path = httproute_path(meta["namespace"], kserve_rules.predictor_service(meta["name"]))
        if not ingress.get("enableGatewayApi"):
            return
        stable = kserve_rules.predictor_service(meta["name"], isvc["spec"]["predictor"].get("name"))
        split = kserve_rules.canary_weights(isvc, self.controller.kserve, ingress)
        weights: Mapping[str, int | None] = split or {stable: None}
        refs = [{"kind": "Service", "name": svc, "port": 80} for svc in weights]
        for ref, weight in zip(refs, weights.values(), strict=True):
            if weight is not None:
                ref["weight"] = weight
        self.objects[route_path] = {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {
                "name": kserve_rules.predictor_service(meta["name"]),
                "namespace": meta["namespace"],
            },
            "spec": {"rules": [{"backendRefs": refs}]},
        }


def fake_api_client(webhook: KServe | None = None) -> tuple[client.ApiClient, FakePoolManager]:
    configuration = client.Configuration(host=HOST)
    api_client = client.ApiClient(configuration)
    fake = FakePoolManager(webhook)
    answer_with(api_client, fake)
    return api_client, fake


def answer_with(api_client: client.ApiClient, fake: FakePoolManager) -> None:
    """Routes every request of ``api_client`` to ``fake``: the client only ever calls its pool
    manager's ``request()``, which the fake answers as urllib3's does (a duck type, hence the cast)."""
    api_client.rest_client.pool_manager = cast(urllib3.PoolManager, fake)


def isvc_path(namespace: str, name: str) -> str:
    return f"/apis/serving.kserve.io/v1beta1/namespaces/{namespace}/inferenceservices/{name}"


def configmap_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/configmaps/{name}"


def deployment_path(namespace: str, name: str) -> str:
    return f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"


def httproute_path(namespace: str, name: str) -> str:
    return f"/apis/gateway.networking.k8s.io/v1/namespaces/{namespace}/httproutes/{name}"


def install_kserve(fake: FakePoolManager, tag: str = "v0.21.0", gateway: bool = True, **ingress: Any) -> None:
    """KServe's controller Deployment and inferenceservice-config in namespace kserve, and a
    controller that reconciles like that release (post-v0.20.0 tags follow master)."""
    image = f"kserve/kserve-controller:{tag}"
    fake.objects[deployment_path("kserve", "kserve-controller-manager")] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "kserve-controller-manager", "namespace": "kserve"},
        "spec": {"template": {"spec": {"containers": [{"name": "manager", "image": image}]}}},
    }
    fake.objects[configmap_path("kserve", "inferenceservice-config")] = kserve_rules.inferenceservice_config(
        kserve_rules.ingress_config(gateway, **ingress)
    )
    release = tag if tag in kserve_rules.RELEASES else "master"
    fake.controller = Controller(KServe(release))


def load_crd() -> dict[str, Any]:
    crd: dict[str, Any] = yaml.load(
        reference("kserve/crd_inferenceservices.yaml").read_text(),
        Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader),
    )
    return crd


def isvc_schema(crd: dict[str, Any]) -> dict[str, Any]:
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def validator(schema: dict[str, Any]) -> jsonschema.Draft7Validator:
    # Kubernetes' structural schemas are OpenAPI v3 subsets; Draft 7 checks every keyword
    # they use (type, properties, required, enum, pattern, minimum/maximum, items, anyOf).
    return jsonschema.Draft7Validator(schema, format_checker=None)


NS = "models"


def base_isvc(name: str, mode: str) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "namespace": NS,
            "generation": 1,
            "annotations": {"serving.kserve.io/deploymentMode": mode},
        },
        "spec": {
            "predictor": {
                "minReplicas": 2,
                "model": {
                    "modelFormat": {"name": "xgboost"},
                    "runtime": "serving-oip",
                    "protocolVersion": "v2",
                    "storageUri": "s3://models/iris/v1",
                    "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}},
                },
            }
        },
    }


def knative_status(latest: str, prev: str | None, percent: int | None) -> dict[str, Any]:
    traffic: list[dict[str, Any]] = [
        {"revisionName": latest, "latestRevision": True, "percent": percent if prev else 100}
    ]
    if prev:
        traffic.append(
            {"revisionName": prev, "latestRevision": False, "percent": 100 - (percent or 0), "tag": "prev"}
        )
    return {
        "deploymentMode": "Serverless",
        "components": {
            "predictor": {"latestReadyRevision": latest, "latestCreatedRevision": latest, "traffic": traffic}
        },
        "conditions": [{"type": "Ready", "status": "True"}],
    }

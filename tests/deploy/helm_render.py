"""Render the Helm chart with the real Helm engine (helm-sdkpy) and collect every object.

helm-sdkpy exposes lint but no ``helm template``; its install action is the real Helm v4
engine. It is pointed at a tiny in-process Kubernetes API stand-in on 127.0.0.1 that answers
discovery and records each object Helm creates (Helm's own release record, a protobuf Secret,
is acknowledged and dropped). What Helm sends is exactly what ``helm template`` would print,
after Helm itself has checked the values against values.schema.json and rendered every template.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

# group/version -> [(plural, kind, namespaced)] the stand-in advertises.
API_RESOURCES: dict[str, list[tuple[str, str, bool]]] = {
    "v1": [
        ("configmaps", "ConfigMap", True),
        ("secrets", "Secret", True),
        ("services", "Service", True),
        ("namespaces", "Namespace", False),
    ],
    "apps/v1": [("deployments", "Deployment", True)],
    "networking.k8s.io/v1": [("networkpolicies", "NetworkPolicy", True)],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "autoscaling/v2": [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True)],
    "serving.kserve.io/v1beta1": [("inferenceservices", "InferenceService", True)],
    "serving.kserve.io/v1alpha1": [
        ("servingruntimes", "ServingRuntime", True),
        ("clusterservingruntimes", "ClusterServingRuntime", False),
    ],
    "monitoring.coreos.com/v1": [
        ("podmonitors", "PodMonitor", True),
        ("servicemonitors", "ServiceMonitor", True),
        ("prometheusrules", "PrometheusRule", True),
    ],
    "keda.sh/v1alpha1": [("scaledobjects", "ScaledObject", True)],
    "rbac.authorization.k8s.io/v1": [("roles", "Role", True), ("rolebindings", "RoleBinding", True)],
}


class _FakeApi(BaseHTTPRequestHandler):
    created: list[dict[str, Any]]

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        parsed: dict[str, Any] = json.loads(raw)
        return parsed

    def do_GET(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        if path == "/version":
            self._send(200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0", "platform": "linux/amd64"})
        elif path == "/api":
            self._send(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
        elif path == "/apis":
            groups: dict[str, list[str]] = {}
            for gv in API_RESOURCES:
                if "/" in gv:
                    group, version = gv.split("/")
                    groups.setdefault(group, []).append(version)
            self._send(
                200,
                {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [
                        {
                            "name": g,
                            "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                            "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]},
                        }
                        for g, vs in groups.items()
                    ],
                },
            )
        elif (served := _group_version(path)) is not None and served in API_RESOURCES:
            self._send(
                200,
                {
                    "kind": "APIResourceList",
                    "apiVersion": "v1",
                    "groupVersion": served,
                    "resources": [
                        {
                            "name": plural,
                            "singularName": kind.lower(),
                            "namespaced": namespaced,
                            "kind": kind,
                            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                        }
                        for plural, kind, namespaced in API_RESOURCES[served]
                    ],
                },
            )
        elif _is_collection(path):
            self._send(200, {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": []})
        else:
            self._send(404, _not_found(path))

    def do_POST(self) -> None:
        if "json" not in (self.headers.get("Content-Type") or ""):
            # Helm's release record (a protobuf Secret): acknowledge it, keep nothing.
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._send(201, {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "release"}})
            return
        obj = self._body()
        self.created.append(obj)
        obj.setdefault("metadata", {}).setdefault("uid", f"uid-{len(self.created)}")
        obj["metadata"].setdefault("resourceVersion", "1")
        self._send(201, obj)

    def do_PUT(self) -> None:
        if "json" not in (self.headers.get("Content-Type") or ""):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._send(200, {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "release"}})
            return
        self._send(200, self._body())

    do_PATCH = do_PUT

    def do_DELETE(self) -> None:
        self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})


def _group_version(path: str) -> str | None:
    if path == "/api/v1":
        return "v1"
    match = re.fullmatch(r"/apis/([^/]+)/([^/]+)", path)
    return f"{match.group(1)}/{match.group(2)}" if match else None


def _is_collection(path: str) -> bool:
    parts = path.strip("/").split("/")
    # /api/v1/<plural> or /api/v1/namespaces/<ns>/<plural>, /apis/<g>/<v>/... likewise
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    return len(rest) in (1, 3)


def _not_found(path: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": f"{path} not found",
        "reason": "NotFound",
        "code": 404,
    }


@contextmanager
def fake_api(tmp: Path) -> Iterator[tuple[Path, list[dict[str, Any]]]]:
    """A kubeconfig pointing at the stand-in, and the list of objects it receives."""
    created: list[dict[str, Any]] = []
    handler = type("Handler", (_FakeApi,), {"created": created})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "fake", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}
                ],
                "users": [{"name": "fake", "user": {"token": "fake"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                "current-context": "fake",
            }
        )
    )
    try:
        yield kubeconfig, created
    finally:
        server.shutdown()
        server.server_close()


def render(
    chart: Path, values: dict[str, Any] | None, tmp: Path, namespace: str = "models"
) -> dict[str, Any]:
    """Install ``chart`` against the stand-in; returns Helm's release (``manifest`` = rendered
    YAML, ``info.notes`` = NOTES.txt) plus ``objects``: every object Helm created."""
    import helm_sdkpy

    with fake_api(tmp) as (kubeconfig, created):
        config = helm_sdkpy.Configuration(namespace=namespace, kubeconfig=str(kubeconfig))
        release: dict[str, Any] = asyncio.run(
            helm_sdkpy.Install(config).run("demo", str(chart), values=values, wait=False, timeout=60)
        )
    release["objects"] = list(created)
    return release

"""In-pod fleet mode on Kubernetes, through the real ``kubernetes`` client over the recording
transport (tests/rollout/kube_fake.py) and real server processes as the "pods".

The fake API server keeps the InferenceService, the policy ConfigMap and the pod list; it
applies merge patches with the ``resourceVersion`` precondition (409 on a stale one) and
answers pod-proxy GETs by forwarding them to the real server behind each pod. A "kubelet"
thread projects the ConfigMap into each pod's mount directory the way the kubelet does (new
timestamped directory, ``..data`` link swapped), after a sync delay. So the CLI's patch, the
servers' watch of the mount and the convergence check all run for real.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import urllib3

from serving.rollout.configmap import ANNOTATION, ISVC_LABEL
from tests.deploy.k8s_schemas import validate_object
from tests.rollout.kube_fake import (
    HOST,
    NS,
    FakePoolManager,
    Recorded,
    answer_with,
    base_isvc,
    isvc_path,
    merge_patch,
)
from tests.server_process import ServerProcess, start_server, wait_until_ready
from tests.versions.conftest import ENV, iris_repo
from tests.versions.kubelet import project

MODEL = "iris-xgb"
ISVC = "iris"
CONFIGMAP = "serving-traffic"
SYNC_DELAY = 0.3  # seconds between a patch and the kubelet's projection (real: up to ~90 s)
CM_PATH = f"/api/v1/namespaces/{NS}/configmaps/{CONFIGMAP}"
PODS_PATH = f"/api/v1/namespaces/{NS}/pods"


class FleetApiServer(FakePoolManager):
    """The recording fake plus what fleet mode needs: ConfigMap optimistic concurrency,
    a pod list, pod proxying to real servers, and a kubelet that projects the ConfigMap
    into every pod's mount (except pods marked stale)."""

    def __init__(self) -> None:
        super().__init__()
        self.pods: dict[str, tuple[str, Path]] = {}
        """pod name -> (server URL, ConfigMap mount directory)."""
        self.stale: set[str] = set()
        self.configmaps: list[dict[str, Any]] = []
        """Every ConfigMap state after a patch (for schema checks)."""

    def add_pod(self, name: str, url: str, mount: Path) -> None:
        self.pods[name] = (url, mount)
        items = [
            {
                "metadata": {"name": pod, "namespace": NS, "labels": {ISVC_LABEL: ISVC}},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]},
            }
            for pod in self.pods
        ]
        self.objects[PODS_PATH] = {"kind": "PodList", "apiVersion": "v1", "items": items}

    def request(
        self, method: str, url: str, body: str | bytes | None = None, headers: Any = None, **kw: Any
    ) -> urllib3.HTTPResponse:
        parsed_url = urllib.parse.urlsplit(url)
        path = urllib.parse.unquote(parsed_url.path)
        if path.startswith(f"{PODS_PATH}/") and path.endswith("/proxy"):
            self.requests.append(Recorded(method, url, dict(headers or {}), None))
            pod, _, port = path.removeprefix(f"{PODS_PATH}/").removesuffix("/proxy").partition(":")
            assert port == "8080", url
            target = urllib.parse.parse_qs(parsed_url.query)["path"][0]
            answer = httpx.get(self.pods[pod][0] + target, timeout=5)
            return self._raw(answer.status_code, answer.content)
        if method == "PATCH" and path == CM_PATH:
            patch = json.loads(body or b"{}")
            current = self.objects[path]
            wanted = (patch.get("metadata") or {}).get("resourceVersion")
            if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
                self.requests.append(Recorded(method, url, dict(headers or {}), patch))
                return self._respond(409, {"kind": "Status", "code": 409, "reason": "Conflict"})
            response = super().request(method, url, body, headers, **kw)
            updated = self.objects[path]
            updated["metadata"]["resourceVersion"] = str(int(current["metadata"]["resourceVersion"]) + 1)
            updated["metadata"].pop("generation", None)  # ConfigMaps have none
            self.configmaps.append(copy.deepcopy(updated))
            threading.Timer(SYNC_DELAY, self.kubelet_sync).start()
            return response
        return super().request(method, url, body, headers, **kw)

    def kubelet_sync(self) -> None:
        data = dict(self.objects[CM_PATH].get("data") or {})
        for pod, (_, mount) in self.pods.items():
            if pod not in self.stale:
                project(mount, data)

    @staticmethod
    def _raw(status: int, data: bytes) -> urllib3.HTTPResponse:
        return urllib3.HTTPResponse(
            body=io.BytesIO(data),
            status=status,
            headers={"Content-Type": "application/json", "Content-Length": str(len(data))},
            preload_content=False,
        )


@dataclass
class Cluster:
    fake: FleetApiServer
    servers: dict[str, ServerProcess]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    from kubernetes import client

    root = tmp_path_factory.mktemp("kube-fleet")
    repo = iris_repo(root / "repo", traffic={"weights": {1: 100}})
    api_client = client.ApiClient(client.Configuration(host=HOST))
    fake = FleetApiServer()
    answer_with(api_client, fake)
    isvc = base_isvc(ISVC, "RawDeployment")
    isvc["metadata"]["annotations"][ANNOTATION] = CONFIGMAP
    fake.objects[isvc_path(NS, ISVC)] = isvc
    fake.objects[CM_PATH] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIGMAP, "namespace": NS, "resourceVersion": "100"},
        "data": {},
    }
    servers: dict[str, ServerProcess] = {}
    with contextlib.ExitStack() as stack:
        for pod in ("iris-predictor-7c9d-abcde", "iris-predictor-7c9d-fghij"):
            mount = root / pod / "traffic"
            project(mount, {})
            env = {
                **ENV,
                "SERVING_TRAFFIC_POLICY_DIR": str(mount),
                "SERVING_TRAFFIC_POLICY_POLL_SECONDS": "0.1",
            }
            server = start_server(repo, root / pod, env=env, grpc=False, wait_ready=False)  # in parallel
            stack.callback(server.stop)
            servers[pod] = server
            fake.add_pod(pod, server.url, mount)
        for server in servers.values():
            wait_until_ready(server, 240)
        yield Cluster(fake, servers)


@pytest.fixture
def cli(cluster: Cluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    from serving.cli import main
    from serving.rollout import kserve

    api_client = cluster_api_client(cluster)
    monkeypatch.setattr(kserve, "load_api_client", lambda context=None: api_client)

    def run(*args: str) -> tuple[int, list[dict[str, Any]]]:
        code = main(["rollout", *args, ISVC, "-n", NS, "--mode", "inpod", "--model", MODEL, "-o", "json"])
        out = capsys.readouterr().out
        return code, [json.loads(line) for line in out.splitlines() if line.strip()]

    return run


def cluster_api_client(cluster: Cluster) -> Any:
    from kubernetes import client

    api_client = client.ApiClient(client.Configuration(host=HOST))
    answer_with(api_client, cluster.fake)
    return api_client


def test_start_promote_through_the_configmap_reach_every_pod(cluster: Cluster, cli: Any) -> None:
    fake = cluster.fake
    fake.requests.clear()
    code, events = cli("start", "--canary-version", "2", "--percent", "25")
    assert code == 0, events
    state = events[-1]["state"]
    assert state["mode"] == "inpod-fleet" and state["canary_percent"] == 25
    generation = state["generation"]
    assert generation >= 1
    # every pod (read through the pod proxy) applies the new generation before `start` returns
    assert {r["name"] for r in state["replicas"]} == set(cluster.servers)
    assert all(
        r["generation"] == generation and r["weights"] == {"1": 75.0, "2": 25.0} for r in state["replicas"]
    )
    for server in cluster.servers.values():
        assert httpx.get(f"{server.url}/v2/models/{MODEL}/traffic").json()["generation"] == generation

    code, events = cli("promote")
    assert code == 0, events
    assert events[-1]["state"]["generation"] == generation + 1
    assert {r["generation"] for r in events[-1]["state"]["replicas"]} == {generation + 1}
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}
    for server in cluster.servers.values():
        versions = {
            httpx.post(f"{server.url}/v2/models/{MODEL}/infer", json=body).headers["x-model-version"]
            for _ in range(20)
        }
        assert versions == {"2"}

    # Every ConfigMap state after a patch is a valid ConfigMap; every patch is a merge patch
    # carrying the resourceVersion it was based on.
    assert fake.configmaps
    for configmap in fake.configmaps:
        assert validate_object(configmap) == []
    patches = [r for r in fake.requests if r.method == "PATCH"]
    assert len(patches) == 2
    for patch in patches:
        assert patch.headers["Content-Type"] == "application/merge-patch+json"
        assert set(patch.body) == {"metadata", "data"} and "resourceVersion" in patch.body["metadata"]
        assert set(patch.body["data"]) == {f"{MODEL}.yaml"}
    # the pods are those of this InferenceService, by KServe's label
    lists = [r.url for r in fake.requests if urllib.parse.urlsplit(r.url).path == PODS_PATH]
    assert lists and all(
        urllib.parse.parse_qs(urllib.parse.urlsplit(u).query)["labelSelector"] == [f"{ISVC_LABEL}={ISVC}"]
        for u in lists
    )
    # the calls the CLI makes (the RBAC Role must allow exactly these)
    kinds = {(r.method, _resource(r.url)) for r in fake.requests}
    assert kinds == FLEET_CALLS


FLEET_CALLS = {
    ("GET", "inferenceservices"),
    ("GET", "configmaps"),
    ("PATCH", "configmaps"),
    ("GET", "pods"),  # list
    ("GET", "pods/proxy"),
}
"""The Kubernetes calls of in-pod fleet mode (asserted above against a real run);
tests/rollout/test_rbac.py checks that the chart's Role grants each of them."""


def _resource(url: str) -> str:
    path = urllib.parse.urlsplit(url).path
    parts = urllib.parse.unquote(path).strip("/").split("/")
    if parts[-1] == "proxy":
        return "pods/proxy"
    if "inferenceservices" in parts:
        return "inferenceservices"
    return "configmaps" if "configmaps" in parts else "pods"


def test_status_names_each_pod_and_a_laggard_fails_the_change_clearly(cluster: Cluster, cli: Any) -> None:
    code, events = cli("status")
    assert code == 0
    assert len(events[-1]["state"]["replicas"]) == 2
    stale = sorted(cluster.servers)[1]
    cluster.fake.stale.add(stale)  # its kubelet stops syncing
    try:
        code, events = cli("start", "--canary-version", "1", "--percent", "10", "--converge-timeout", "3s")
        assert code == 3, events
        error = events[-1]["error"]
        assert "not applied by 1 replica(s) after 3s" in error and stale in error
        assert sorted(cluster.servers)[0] not in error
        code, events = cli("status")
        notes = " ".join(events[-1]["state"]["notes"])
        assert f"1 of 2 replicas not on generation {events[-1]['state']['generation']}: {stale}" in notes
    finally:
        cluster.fake.stale.discard(stale)
        cluster.fake.kubelet_sync()


def test_a_stale_resource_version_is_retried(cluster: Cluster) -> None:
    from serving.rollout.configmap import ConfigMapStore

    store = ConfigMapStore(cluster_api_client(cluster), ISVC, NS)
    before = store.read(MODEL)
    real_read = store._configmap
    calls = {"n": 0}

    def racing_read() -> dict[str, Any]:
        doc = real_read()
        calls["n"] += 1
        if calls["n"] == 1:  # someone else writes between our read and our patch
            cm = cluster.fake.objects[CM_PATH]
            cluster.fake.objects[CM_PATH] = merge_patch(cm, {"metadata": {"resourceVersion": "999"}})
        return doc

    store._configmap = racing_read  # type: ignore[method-assign]
    generation = store.write(MODEL, {"weights": {"1": 100}})
    assert calls["n"] == 2  # re-read after the 409
    assert generation == (before.generation if before else 0) + 1
    assert [r.method for r in cluster.fake.requests if r.method == "PATCH"][-2:] == ["PATCH", "PATCH"]


def test_an_inferenceservice_without_the_annotation_is_refused_clearly(
    cluster: Cluster, cli: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from serving.cli import main

    cluster.fake.objects[isvc_path(NS, "plain")] = base_isvc("plain", "RawDeployment")
    assert main(["rollout", "status", "plain", "-n", NS, "--mode", "inpod"]) == 3
    out = capsys.readouterr().out
    assert f"has no '{ANNOTATION}' annotation" in out and "Traceback" not in out

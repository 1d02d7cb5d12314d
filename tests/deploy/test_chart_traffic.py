"""The chart's fleet traffic-policy pieces (docs/canary.md, "Fleet mode"): the ConfigMap,
its directory mount into the runtime container, the annotation the rollout CLI finds it
by, and the optional admin port with its NetworkPolicy; rendered by the real Helm engine and
validated against the Kubernetes schemas."""

from __future__ import annotations

from typing import Any

import pytest

from serving.rollout.configmap import ANNOTATION
from tests.deploy.helm_render import render
from tests.deploy.k8s_schemas import validate_object
from tests.server_process import ROOT

CHART = ROOT / "charts" / "serving"
ADMIN_PORT = 8090
VALUES = {
    "admin": {
        "port": ADMIN_PORT,
        "networkPolicy": {
            "enabled": True,
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "rollouts"}}}],
        },
    },
    "models": [
        {"name": "iris-xgb", "format": "xgboost", "storageUri": "pvc://m/iris-xgb",
         "autoscaler": {"class": "hpa"}, "inPodTraffic": {"adminTokenSecret": "iris-admin"}},
        {"name": "cancer-onnx", "format": "onnx", "storageUri": "pvc://m/cancer-onnx"},
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return render(CHART, VALUES, tmp_path_factory.mktemp("traffic"))


def of_kind(release: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in release["objects"] if o["kind"] == kind}


def test_configmap_mounted_as_a_directory_and_named_on_each_inferenceservice(release: dict[str, Any]) -> None:
    assert [p for o in release["objects"] for p in validate_object(o)] == []
    configmaps = of_kind(release, "ConfigMap")
    configmap = configmaps["demo-serving-traffic"]
    assert "data" not in configmap or not configmap["data"]  # the CLI owns the keys
    for isvc in of_kind(release, "InferenceService").values():
        assert isvc["metadata"]["annotations"][ANNOTATION] == "demo-serving-traffic"
    for runtime in of_kind(release, "ServingRuntime").values():
        spec = runtime["spec"]
        (container,) = spec["containers"]
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == "traffic-policy"]
        assert mount["readOnly"] is True and "subPath" not in mount  # subPath never sees updates
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["SERVING_TRAFFIC_POLICY_DIR"] == mount["mountPath"]
        assert env["SERVING_ADMIN_PORT"] == str(ADMIN_PORT)
        (volume,) = [v for v in spec["volumes"] if v["name"] == "traffic-policy"]
        assert volume["configMap"]["name"] == "demo-serving-traffic"
    # Knative routes one port: the admin port is listed only on the Standard-mode runtime
    ports = {n: [p["containerPort"] for p in r["spec"]["containers"][0]["ports"]]
             for n, r in of_kind(release, "ServingRuntime").items()}  # fmt: skip
    assert ports == {"demo-serving": [8080, 8081, ADMIN_PORT], "demo-serving-knative": [8080]}


def test_network_policy_keeps_inference_callers_off_the_admin_port(release: dict[str, Any]) -> None:
    (policy,) = of_kind(release, "NetworkPolicy").values()
    spec = policy["spec"]
    assert spec["podSelector"]["matchExpressions"][0]["values"] == ["iris-xgb", "cancer-onnx"]
    open_rule, admin_rule = spec["ingress"]
    open_ports = {p["port"] for p in open_rule["ports"]}
    assert ADMIN_PORT not in open_ports and {8080, 8081, 8012} <= open_ports  # 8012: Knative queue-proxy
    assert "from" not in open_rule
    assert [p["port"] for p in admin_rule["ports"]] == [ADMIN_PORT]
    assert admin_rule["from"] == VALUES["admin"]["networkPolicy"]["from"]  # type: ignore[index]


def test_defaults_render_no_traffic_pieces(tmp_path_factory: pytest.TempPathFactory) -> None:
    plain = render(CHART, None, tmp_path_factory.mktemp("plain"))
    assert "demo-serving-traffic" not in of_kind(plain, "ConfigMap")
    assert not of_kind(plain, "NetworkPolicy")

"""The chart's modelRepository: the server reads an object store itself (credentials from a
Secret as the store's standard variables, a cache volume), while the default keeps KServe's
storage initializer and /mnt/models unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

from tests.deploy.helm_render import render
from tests.deploy.k8s_schemas import validate_object
from tests.server_process import ROOT

CHART = ROOT / "charts" / "serving"
SCHEMA = json.loads((CHART / "values.schema.json").read_text())


def _objects(values: dict[str, Any], where: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    where.mkdir(parents=True)
    release = render(CHART, values, where)
    # the Standard-mode runtime (a Knative variant may follow)
    runtime = next(o for o in release["objects"] if o["kind"] == "ServingRuntime")
    (isvc,) = [o for o in release["objects"] if o["kind"] == "InferenceService"]
    assert validate_object(isvc) == []
    return runtime, isvc


def test_default_keeps_kserve_storage_initializer_and_mnt_models(tmp_path: Path) -> None:
    runtime, isvc = _objects(
        {"models": [{"name": "m", "format": "onnx", "storageUri": "s3://b/m"}]}, tmp_path / "r"
    )
    (container,) = runtime["spec"]["containers"]
    assert "--model-repo=/mnt/models" in container["args"]
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == "s3://b/m"
    assert "envFrom" not in container
    assert [v["name"] for v in runtime["spec"]["volumes"]] == ["tmp"]


def test_object_store_repository_with_credentials_and_cache_volume(tmp_path: Path) -> None:
    values = {
        "modelRepository": {"uri": "s3://models/prod", "credentialsSecret": "store-creds", "pollSeconds": 15},
        "models": [{"name": "iris-xgb", "format": "xgboost"}],
    }
    schema = jsonschema.Draft7Validator(SCHEMA["properties"]["modelRepository"])
    assert not list(schema.iter_errors(values["modelRepository"]))
    assert list(schema.iter_errors({"uri": "/mnt/models"}))  # a folder is KServe's business
    runtime, isvc = _objects(values, tmp_path / "a")
    (container,) = runtime["spec"]["containers"]
    assert "--model-repo=s3://models/prod" in container["args"]
    assert "--model-repo=/mnt/models" not in container["args"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SERVING_MODEL_CACHE_DIR"] == "/var/cache/serving/models"
    assert env["SERVING_REPOSITORY_POLL_SECONDS"] == "15"
    assert container["envFrom"] == [{"secretRef": {"name": "store-creds"}}]
    assert not any("SECRET" in name or "KEY" in name for name in env)  # never inline
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["model-cache"] == "/var/cache/serving/models"
    volumes = {v["name"]: v for v in runtime["spec"]["volumes"]}
    assert volumes["model-cache"] == {"name": "model-cache", "emptyDir": {"sizeLimit": "4Gi"}}
    assert "storageUri" not in isvc["spec"]["predictor"]["model"]

    # A cache shared by the pods of a node (hostPath) or kept across pods (PVC), bounded.
    shared = {
        "modelRepository": {
            "uri": "gs://models/prod",
            "cache": {"volume": {"persistentVolumeClaim": {"claimName": "model-cache"}}, "maxBytes": 10**9},
        },
        "models": [{"name": "iris-xgb", "format": "xgboost"}],
    }
    runtime, _ = _objects(shared, tmp_path / "b")
    volumes = {v["name"]: v for v in runtime["spec"]["volumes"]}
    assert volumes["model-cache"] == {
        "name": "model-cache",
        "persistentVolumeClaim": {"claimName": "model-cache"},
    }
    env = {e["name"]: e.get("value") for e in runtime["spec"]["containers"][0]["env"]}
    assert env["SERVING_MODEL_CACHE_MAX_BYTES"] == "1000000000"


def test_a_model_without_storage_uri_or_repository_is_refused(tmp_path: Path) -> None:
    try:
        _objects({"models": [{"name": "m", "format": "onnx"}]}, tmp_path / "r")
    except Exception as exc:
        assert "m has no storageUri" in str(exc)
    else:
        raise AssertionError("rendered a model with nowhere to read it from")

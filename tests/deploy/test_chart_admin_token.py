"""The chart gives the server its admin token from a Kubernetes Secret, never as a plain value
in the release's values (which Helm stores in its release record and prints on request)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import helm_sdkpy
import jsonschema
import pytest

from tests.deploy.helm_render import render
from tests.deploy.k8s_schemas import validate_object
from tests.server_process import ROOT

CHART = ROOT / "charts" / "serving"
SCHEMA = json.loads((CHART / "values.schema.json").read_text())


def _model(**extra: Any) -> dict[str, Any]:
    return {"name": "m", "format": "onnx", "storageUri": "pvc://m", "autoscaler": {"class": "hpa"}, **extra}


def _render(values: dict[str, Any], where: Path) -> dict[str, Any]:
    where.mkdir(parents=True)
    return render(CHART, values, where)


def _token_env(values: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    release = _render(values, tmp_path)
    (isvc,) = [o for o in release["objects"] if o["kind"] == "InferenceService"]
    assert validate_object(isvc) == []
    env = {e["name"]: e for e in isvc["spec"]["predictor"]["model"].get("env", [])}
    return dict(env["SERVING_ADMIN_TOKEN"])


def test_admin_token_from_a_secret(tmp_path: Path) -> None:
    values = {"models": [_model(adminToken={"secretName": "m-admin", "key": "admin-token"})]}
    assert _token_env(values, tmp_path / "a") == {
        "name": "SERVING_ADMIN_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "m-admin", "key": "admin-token"}},
    }
    default_key = {"models": [_model(adminToken={"secretName": "m-admin"})]}
    assert _token_env(default_key, tmp_path / "b")["valueFrom"]["secretKeyRef"] == {
        "name": "m-admin",
        "key": "token",
    }
    # the in-pod traffic policy's Secret keeps working; adminToken wins when both are given
    in_pod = {"models": [_model(inPodTraffic={"adminTokenSecret": "pod-admin"})]}
    assert _token_env(in_pod, tmp_path / "c")["valueFrom"]["secretKeyRef"] == {
        "name": "pod-admin",
        "key": "token",
    }
    both = {
        "models": [
            _model(inPodTraffic={"adminTokenSecret": "pod-admin"}, adminToken={"secretName": "m-admin"})
        ]
    }
    assert _token_env(both, tmp_path / "d")["valueFrom"]["secretKeyRef"]["name"] == "m-admin"


def test_a_plain_token_value_is_refused(tmp_path: Path) -> None:
    plain = {"models": [_model(env=[{"name": "SERVING_ADMIN_TOKEN", "value": "0123456789abcdef01234567"}])]}
    with pytest.raises(
        helm_sdkpy.InstallError,
        match=r"env SERVING_ADMIN_TOKEN has a plain value; keep the token in a Secret",
    ):
        _render(plain, tmp_path / "a")
    twice = {
        "models": [
            _model(
                adminToken={"secretName": "m-admin"},
                env=[
                    {"name": "SERVING_ADMIN_TOKEN", "valueFrom": {"secretKeyRef": {"name": "x", "key": "y"}}}
                ],
            )
        ]
    }
    with pytest.raises(
        helm_sdkpy.InstallError, match=r"SERVING_ADMIN_TOKEN is set both in env and by adminToken"
    ):
        _render(twice, tmp_path / "b")


def test_schema_requires_the_secret_name() -> None:
    validator = jsonschema.Draft7Validator(SCHEMA)
    errors = list(validator.iter_errors({"models": [_model(adminToken={"key": "token"})]}))
    assert any("'secretName' is a required property" in e.message for e in errors), errors
    errors = list(validator.iter_errors({"models": [_model(adminToken={"secretName": "s", "value": "x"})]}))
    assert any("'value' was unexpected" in e.message for e in errors), errors

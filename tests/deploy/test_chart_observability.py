"""Chart values for tracing and payload logging (docs/observability.md): they reach the
server as the settings and OTEL_* variables it reads, and nothing changes when they are off."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import helm_sdkpy
import jsonschema
import pytest
import yaml

from serving.settings import Settings
from tests.deploy.helm_render import render
from tests.deploy.k8s_schemas import validate_object
from tests.server_process import ROOT

CHART = ROOT / "charts" / "serving"
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
DEFAULTS: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
MODEL = {"name": "fraud", "format": "xgboost", "storageUri": "pvc://m/fraud", "autoscaler": {"class": "hpa"}}
ON = {
    "models": [MODEL],
    "observability": {
        "tracing": {
            "enabled": True,
            "otlpEndpoint": "http://otel-collector.observability:4318",
            "sampleRatio": 0.05,
        },
        "payloadLogging": {
            "url": "http://broker-ingress.knative-eventing/models/default",
            "sampleRate": 0.1,
            "by": "key",
        },
    },
}


def _env(values: dict[str, Any], where: Path) -> dict[str, str]:
    """The model pod's environment: the runtime's container env, then the InferenceService's."""
    where.mkdir(parents=True)
    objects = render(CHART, values, where)["objects"]
    (runtime,) = [o for o in objects if o["kind"] == "ServingRuntime"]
    (isvc,) = [o for o in objects if o["kind"] == "InferenceService"]
    assert validate_object(runtime) == [] and validate_object(isvc) == []
    env = {e["name"]: e.get("value") for e in runtime["spec"]["containers"][0]["env"]}
    env.update({e["name"]: e.get("value") for e in isvc["spec"]["predictor"]["model"].get("env", [])})
    return env


def test_off_by_default(tmp_path: Path) -> None:
    env = _env({"models": [MODEL]}, tmp_path / "off")
    assert not {k for k in env if k.startswith(("OTEL_", "SERVING_TRACING", "SERVING_PAYLOAD"))}


def test_values_reach_the_server_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env(ON, tmp_path / "on")
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4318"
    assert env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert env["OTEL_TRACES_SAMPLER_ARG"] == "0.05"
    assert env["OTEL_SERVICE_NAME"] == "fraud"
    for name, value in env.items():
        if name.startswith("SERVING_") and value is not None:
            monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.tracing is True
    assert settings.payload_log_url == "http://broker-ingress.knative-eventing/models/default"
    assert settings.payload_log_sample_rate == 0.1
    assert settings.payload_log_by == "key"
    assert settings.payload_log_inference_service == "fraud"
    assert settings.payload_log_namespace == "models"


@pytest.mark.parametrize(
    "observability",
    [
        {"tracing": {"sampleRatio": 2}},
        {"tracing": {"otlpEndpoint": "otel-collector:4318"}},
        {"payloadLogging": {"url": "kafka://broker"}},
        {"payloadLogging": {"by": "user"}},
    ],
)
def test_schema_refuses_bad_values(observability: dict[str, Any]) -> None:
    jsonschema.Draft7Validator(SCHEMA).validate({**DEFAULTS, **ON})  # the good ones pass
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(SCHEMA).validate(
            {**DEFAULTS, "models": [MODEL], "observability": observability}
        )


def test_tracing_without_an_endpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(helm_sdkpy.InstallError, match="otlpEndpoint"):
        render(CHART, {"models": [MODEL], "observability": {"tracing": {"enabled": True}}}, tmp_path)

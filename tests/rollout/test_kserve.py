"""Every InferenceService request the rollout CLI sends, validated against the KServe CRD.

No API server runs here: the real ``kubernetes`` client sends through a recording pool
manager (tests/rollout/kube_fake.py), and each PATCH body is checked against the CRD's
``openAPIV3Schema`` twice: the patch itself (as a partial object) and the object it yields.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import pytest

from serving.rollout import kserve
from serving.rollout.state import RolloutError
from tests.rollout.kube_fake import (
    NS,
    FakePoolManager,
    base_isvc,
    fake_api_client,
    isvc_path,
    isvc_schema,
    knative_status,
    load_crd,
    strip_nulls,
    validator,
    without_required,
)

CRD_URL = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/inferenceservices.serving.kserve.io"


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return load_crd()


@pytest.fixture(scope="module")
def full(crd: dict[str, Any]) -> jsonschema.Draft7Validator:
    return validator(isvc_schema(crd))


@pytest.fixture(scope="module")
def partial(crd: dict[str, Any]) -> jsonschema.Draft7Validator:
    return validator(without_required(isvc_schema(crd)))


def check_requests(
    fake: FakePoolManager, full: jsonschema.Draft7Validator, partial: jsonschema.Draft7Validator
) -> list[dict[str, Any]]:
    """Validate every PATCH the client sent; return the bodies."""
    bodies = []
    state: dict[str, Any] | None = None
    for req in fake.requests:
        if req.method == "GET" and "/inferenceservices/" in req.url:
            state = None
        if req.method != "PATCH":
            continue
        assert req.headers["Content-Type"] == "application/merge-patch+json"
        assert req.url.startswith(
            "https://kube.invalid/apis/serving.kserve.io/v1beta1/namespaces/models/inferenceservices/"
        )
        partial.validate(strip_nulls(req.body))
        bodies.append(req.body)
    for obj in fake.objects.values():
        full.validate(obj)
    del state
    return bodies


def test_base_objects_are_valid(full: jsonschema.Draft7Validator) -> None:
    full.validate(base_isvc("iris", "Standard"))
    obj = base_isvc("iris", "Serverless")
    obj["status"] = knative_status("iris-predictor-00002", "iris-predictor-00001", 10)
    full.validate(obj)


def test_validator_catches_bad_bodies(
    full: jsonschema.Draft7Validator, partial: jsonschema.Draft7Validator
) -> None:
    """The check can fail: out-of-range percent, missing canary name, bad canary name."""
    with pytest.raises(jsonschema.ValidationError):
        partial.validate({"spec": {"canary": [{"trafficPercent": 150, "predictor": {"name": "v2"}}]}})
    obj = base_isvc("iris", "Standard")
    obj["spec"]["canary"] = [{"predictor": {"name": "v2"}}]  # trafficPercent is required
    with pytest.raises(jsonschema.ValidationError):
        full.validate(obj)
    obj["spec"]["canary"] = [{"trafficPercent": 10, "predictor": {"name": "V2_bad"}}]
    with pytest.raises(jsonschema.ValidationError):
        full.validate(obj)


def test_knative_flow(full: jsonschema.Draft7Validator, partial: jsonschema.Draft7Validator) -> None:
    api_client, fake = fake_api_client()
    obj = base_isvc("iris", "Serverless")
    obj["status"] = knative_status("iris-predictor-00001", None, None)
    fake.objects[isvc_path(NS, "iris")] = obj
    target = kserve.InferenceServiceTarget(api_client, "iris", NS)

    before = target.state()
    assert before.mode == "knative" and before.canary is None and before.stable is not None
    target.start(10, "s3://models/iris/v2", None)
    target.set_percent(25)
    target.promote()
    bodies = check_requests(fake, full, partial)
    assert bodies == [
        {"spec": {"predictor": {"canaryTrafficPercent": 10, "model": {"storageUri": "s3://models/iris/v2"}}}},
        {"spec": {"predictor": {"canaryTrafficPercent": 25}}},
        {"spec": {"predictor": {"canaryTrafficPercent": None}}},
    ]
    final = fake.objects[isvc_path(NS, "iris")]
    assert "canaryTrafficPercent" not in final["spec"]["predictor"]
    assert final["spec"]["predictor"]["model"]["storageUri"] == "s3://models/iris/v2"
    assert final["spec"]["predictor"]["model"]["modelFormat"] == {"name": "xgboost"}  # merge kept it


def test_knative_state_and_rollback(
    full: jsonschema.Draft7Validator, partial: jsonschema.Draft7Validator
) -> None:
    api_client, fake = fake_api_client()
    obj = base_isvc("iris", "Serverless")
    obj["spec"]["predictor"]["canaryTrafficPercent"] = 25
    obj["status"] = knative_status("iris-predictor-00002", "iris-predictor-00001", 25)
    fake.objects[isvc_path(NS, "iris")] = obj
    target = kserve.InferenceServiceTarget(api_client, "iris", NS)
    state = target.state()
    assert (
        state.canary is not None
        and state.canary.name == "iris-predictor-00002"
        and state.canary_percent == 25
    )
    assert state.stable is not None and state.stable.percent == 75 and state.stable.ready
    assert state.canary.ready
    stable_side, canary_side = state.sides
    assert (
        canary_side.matchers
        == 'namespace="models",pod=~"iris-predictor-00002-deployment-[a-z0-9]+-[a-z0-9]+"'
    )
    assert "iris-predictor-00001-deployment" in stable_side.matchers
    target.rollback()
    assert check_requests(fake, full, partial) == [{"spec": {"predictor": {"canaryTrafficPercent": 0}}}]


def test_standard_flow_promote(
    crd: dict[str, Any], full: jsonschema.Draft7Validator, partial: jsonschema.Draft7Validator
) -> None:
    api_client, fake = fake_api_client()
    fake.objects[isvc_path(NS, "iris")] = base_isvc("iris", "Standard")
    fake.raw[CRD_URL] = crd
    target = kserve.InferenceServiceTarget(api_client, "iris", NS, canary_name="v2")

    target.start(10, "s3://models/iris/v2", None)
    state = target.state()
    assert state.mode == "standard" and state.canary_percent == 10
    assert state.stable is not None and state.stable.percent == 90
    assert state.sides[1].matchers == 'namespace="models",pod=~"iris-v2-predictor-[a-z0-9]+-[a-z0-9]+"'
    assert state.sides[0].matchers == 'namespace="models",pod=~"iris-predictor-[a-z0-9]+-[a-z0-9]+"'
    target.set_percent(50)
    target.promote()
    bodies = check_requests(fake, full, partial)
    assert len(bodies) == 3
    entry = bodies[0]["spec"]["canary"][0]
    assert entry["trafficPercent"] == 10
    assert entry["predictor"]["name"] == "v2"
    assert entry["predictor"]["model"]["storageUri"] == "s3://models/iris/v2"
    assert entry["predictor"]["model"]["modelFormat"] == {"name": "xgboost"}
    assert entry["predictor"]["model"]["name"] == "kserve-container"  # the CRD requires it here
    assert bodies[1]["spec"]["canary"][0]["trafficPercent"] == 50
    final = fake.objects[isvc_path(NS, "iris")]
    assert final["spec"]["canary"] == []
    assert final["spec"]["predictor"]["name"] == "v2"
    assert final["spec"]["predictor"]["model"]["storageUri"] == "s3://models/iris/v2"
    assert final["spec"]["predictor"]["minReplicas"] == 2  # stable settings kept under the overlay
    # after promotion the stable side is the canary's Deployment
    assert "iris-v2-predictor-" in target.state().sides[0].matchers


def test_standard_rollback_keeps_other_canaries(
    full: jsonschema.Draft7Validator, partial: jsonschema.Draft7Validator
) -> None:
    api_client, fake = fake_api_client()
    obj = base_isvc("iris", "Standard")
    model = {**copy.deepcopy(obj["spec"]["predictor"]["model"]), "name": "kserve-container"}
    obj["spec"]["canary"] = [
        {"trafficPercent": 0, "predictor": {"name": "experimental", "model": model}},
        {"trafficPercent": 20, "predictor": {"name": "v2", "model": {**model, "storageUri": "s3://m/v2"}}},
    ]
    obj["status"] = {
        "deploymentMode": "Standard",
        "canaryStatuses": [
            {"name": "experimental", "ready": True, "trafficPercent": 0},
            {"name": "v2", "ready": True, "trafficPercent": 20},
        ],
    }
    fake.objects[isvc_path(NS, "iris")] = obj
    target = kserve.InferenceServiceTarget(api_client, "iris", NS, canary_name="v2")
    assert target.state().canary_percent == 20
    target.rollback()
    bodies = check_requests(fake, full, partial)
    assert [c["predictor"]["name"] for c in bodies[0]["spec"]["canary"]] == ["experimental"]
    # without a name, two canaries are ambiguous
    with pytest.raises(RolloutError, match="several canaries"):
        kserve.standard_promote_patch(obj, None)


def test_standard_start_refused_on_old_crd(crd: dict[str, Any]) -> None:
    api_client, fake = fake_api_client()
    fake.objects[isvc_path(NS, "iris")] = base_isvc("iris", "Standard")
    old = json.loads(json.dumps(crd))
    for version in old["spec"]["versions"]:
        del version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["canary"]
    fake.raw[CRD_URL] = old
    target = kserve.InferenceServiceTarget(api_client, "iris", NS)
    with pytest.raises(RolloutError, match=r"KServe < 0\.20"):
        target.start(10, "s3://m/v2", None)
    assert not [r for r in fake.requests if r.method == "PATCH"]
    fake.raw[CRD_URL] = 403  # no RBAC for CRDs: the API server's validation decides
    target.start(10, "s3://m/v2", None)
    assert [r.method for r in fake.requests].count("PATCH") == 1


def test_framework_key_and_unknown_mode() -> None:
    obj = base_isvc("iris", "Serverless")
    obj["spec"]["predictor"] = {"xgboost": {"storageUri": "s3://a"}}
    assert kserve.knative_start_patch(obj, "s3://b", 5) == {
        "spec": {"predictor": {"canaryTrafficPercent": 5, "xgboost": {"storageUri": "s3://b"}}}
    }
    obj["metadata"]["annotations"][kserve.MODE_ANNOTATION] = "ModelMesh"
    with pytest.raises(RolloutError, match="--mode inpod"):
        kserve.deployment_mode(obj)


def test_missing_object_is_a_clear_error() -> None:
    api_client, _ = fake_api_client()
    with pytest.raises(RolloutError, match="404"):
        kserve.InferenceServiceTarget(api_client, "nope", NS).state()


def test_cli_drives_the_kubernetes_client(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    crd: dict[str, Any],
    full: jsonschema.Draft7Validator,
    partial: jsonschema.Draft7Validator,
) -> None:
    """`serving rollout start/status/promote` in Standard mode, JSON and text output."""
    from serving.cli import main

    api_client, fake = fake_api_client()
    fake.objects[isvc_path(NS, "iris")] = base_isvc("iris", "Standard")
    fake.raw[CRD_URL] = crd
    monkeypatch.setattr(kserve, "load_api_client", lambda context=None: api_client)
    common = ["iris", "-n", NS, "--canary-name", "v2"]

    assert (
        main(["rollout", "start", *common, "--storage-uri", "s3://m/v2", "--percent", "10", "-o", "json"])
        == 0
    )
    event = json.loads(capsys.readouterr().out)
    assert event["event"] == "started"
    assert event["state"]["canary_percent"] == 10
    assert event["state"]["revisions"][1] == {
        "name": "v2",
        "percent": 10,
        "ready": False,
        "role": "canary",
        "detail": "iris-v2-predictor",
    }
    assert main(["rollout", "status", *common]) == 0
    text = capsys.readouterr().out
    assert "models/iris (standard)" in text and "canary  v2" in text and "10%" in text
    assert main(["rollout", "promote", *common]) == 0
    assert main(["rollout", "analyze", *common, "--prometheus", "http://127.0.0.1:9"]) == 3  # no canary left
    assert "has no canary" in capsys.readouterr().out
    bodies = check_requests(fake, full, partial)
    assert [list(b["spec"]) for b in bodies] == [["canary"], ["predictor", "canary"]]

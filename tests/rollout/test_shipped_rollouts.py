"""The rollout CLI's patches on the InferenceServices we ship: every one the chart renders (each
values set of tests/deploy/test_chart.py) and every one in manifests/, created through KServe's
webhooks as ported (tests/deploy/kserve_rules.py) of the KServe release each targets, then rolled
out through the real kubernetes client against the recording API server, which applies those
webhooks to each patch. Standard mode: start -> step -> promote -> start -> promote -> start ->
rollback (on releases with spec.canary, v0.20.0 and later); Knative mode: start -> step ->
promote -> start -> rollback. Every patch and stored object is also checked against KServe's CRD."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest

from serving.rollout import kserve
from serving.rollout.state import RolloutError
from tests.deploy.helm_render import render
from tests.deploy.k8s_schemas import load_kustomization
from tests.deploy.kserve_rules import RELEASES, KServe, admit_isvc
from tests.deploy.test_chart import CHART, RELEASE_OF, VALUE_SETS
from tests.rollout.kube_fake import (
    NS,
    fake_api_client,
    install_kserve,
    isvc_path,
    isvc_schema,
    knative_status,
    load_crd,
    strip_nulls,
    validator,
    without_required,
)
from tests.server_process import ROOT

# The manifests spell the modes Standard/Knative, which KServe knows from v0.16.0.
MANIFEST_RELEASES = tuple(r for r in RELEASES if KServe(r).at_least("v0.16.0"))
Shipped = list[tuple[str, tuple[str, ...], dict[str, Any]]]


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Shipped:
    """(where, the KServe releases it targets, InferenceService) for everything we ship."""
    found: Shipped = []
    for name, values in VALUE_SETS.items():
        release = render(CHART, values, tmp_path_factory.mktemp(name))
        found += [
            (f"chart {name}", (RELEASE_OF[name],), o)
            for o in release["objects"]
            if o["kind"] == "InferenceService"
        ]
    manifests = load_kustomization(ROOT / "manifests")
    found += [("manifests", MANIFEST_RELEASES, o) for o in manifests if o["kind"] == "InferenceService"]
    assert {where for where, _, _ in found} >= {"manifests", "chart all-modes"}
    return found


def is_standard(isvc: dict[str, Any]) -> bool:
    mode = isvc["metadata"]["annotations"].get("serving.kserve.io/deploymentMode")
    return mode in ("Standard", "RawDeployment")


def roll_out(isvc: dict[str, Any], version: str) -> tuple[list[Any], dict[str, Any], list[str]]:
    """Create ``isvc`` (through the webhooks of ``version``), run a whole rollout; returns the
    patches sent, the final object and the webhook's refusals."""
    api_client, fake = fake_api_client(KServe(version))
    install_kserve(fake, tag="v0.21.0")
    obj = copy.deepcopy(isvc)
    obj["metadata"]["namespace"] = NS
    stored = admit_isvc(obj, KServe(version))
    name = stored["metadata"]["name"]
    if is_standard(stored):
        stored["status"] = {"deploymentMode": "Standard"}
    else:
        stored["status"] = knative_status(f"{name}-predictor-00001", None, None)
    fake.objects[isvc_path(NS, name)] = stored
    target = kserve.InferenceServiceTarget(api_client, name, NS)
    steps: list[Any]
    if is_standard(stored):
        steps = [
            lambda: target.start(10, "pvc://models/next/v2", None),
            lambda: target.set_percent(50),
            target.promote,
            lambda: target.start(10, "pvc://models/next/v3", None),
            target.promote,
            lambda: target.start(10, "pvc://models/next/v4", None),
            target.rollback,
        ]
    else:
        steps = [
            lambda: target.start(10, "pvc://models/next/v2", None),
            lambda: target.set_percent(50),
            target.promote,
            lambda: target.start(10, "pvc://models/next/v3", None),
            target.rollback,
        ]
    for step in steps:
        step()
    patches = [r.body for r in fake.requests if r.method == "PATCH"]
    assert len(patches) == len(steps)
    return patches, fake.objects[isvc_path(NS, name)], fake.refusals


@pytest.fixture(scope="module")
def crd_validators() -> tuple[jsonschema.Draft7Validator, jsonschema.Draft7Validator]:
    schema = isvc_schema(load_crd())
    return validator(schema), validator(without_required(schema))


def test_every_shipped_inference_service_rolls_out(
    shipped: Shipped, crd_validators: tuple[jsonschema.Draft7Validator, jsonschema.Draft7Validator]
) -> None:
    full, partial = crd_validators
    standard = 0
    for where, targets, isvc in shipped:
        versions = targets
        if is_standard(isvc):  # spec.canary[] exists from v0.20.0 (the CLI refuses before)
            versions = tuple(v for v in targets if KServe(v).at_least("v0.20.0"))
            if not versions:
                continue
        for version in versions:
            patches, final, refusals = roll_out(isvc, version)
            assert refusals == [], (where, isvc["metadata"]["name"], version)
        for body in patches:
            partial.validate(strip_nulls(body))
        full.validate({k: v for k, v in final.items() if k != "status"})
        predictor = final["spec"]["predictor"]
        if is_standard(isvc):
            standard += 1
            assert final["spec"]["canary"] == [] and "name" not in predictor["model"]
            assert predictor["model"]["storageUri"] == "pvc://models/next/v3"
            assert predictor.get("name") == isvc["spec"]["predictor"].get("name")  # Deployment kept
        else:
            assert predictor["canaryTrafficPercent"] == 0  # rolled back
    assert standard >= 2


def test_a_refused_patch_fails_the_rollout(shipped: Shipped, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check can fail: had start not picked a free canary name, KServe would refuse it."""
    isvc = next(i for w, _, i in shipped if is_standard(i) and w == "manifests")
    named = copy.deepcopy(isvc)
    named["spec"]["predictor"]["name"] = "canary"
    roll_out(named, "v0.20.0")  # start picks canary-2
    monkeypatch.setattr(kserve, "default_canary_name", lambda obj: "canary")
    with pytest.raises(RolloutError, match="conflicts with stable predictor name"):
        roll_out(named, "v0.20.0")

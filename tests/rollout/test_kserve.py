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
from tests.deploy import kserve_rules
from tests.deploy.kserve_rules import KServe
from tests.rollout.kube_fake import (
    NS,
    FakePoolManager,
    base_isvc,
    fake_api_client,
    httproute_path,
    install_kserve,
    isvc_path,
    isvc_schema,
    knative_status,
    load_crd,
    merge_patch,
    strip_nulls,
    validator,
    without_required,
)


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
    for path, obj in fake.objects.items():
        if "/inferenceservices/" in path:
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


def isvc_patches(fake: FakePoolManager) -> list[Any]:
    return [r for r in fake.requests if r.method == "PATCH"]


def test_standard_start_promote_twice_is_accepted_at_every_step(
    full: jsonschema.Draft7Validator, partial: jsonschema.Draft7Validator
) -> None:
    """start -> promote -> start -> promote with the default canary name, every write through
    KServe's webhooks (ported), the controller's HTTPRoute weights read back as the split."""
    api_client, fake = fake_api_client()
    install_kserve(fake)
    fake.objects[isvc_path(NS, "iris")] = base_isvc("iris", "Standard")
    target = kserve.InferenceServiceTarget(api_client, "iris", NS)

    for round_, uri in enumerate(("s3://models/iris/v2", "s3://models/iris/v3")):
        target.start(10, uri, None)
        state = target.state()
        assert state.mode == "standard" and state.canary is not None
        assert (state.canary.name, state.canary_percent) == ("canary", 10)
        assert state.stable is not None and state.stable.percent == 90
        assert (
            state.sides[1].matchers == 'namespace="models",pod=~"iris-canary-predictor-[a-z0-9]+-[a-z0-9]+"'
        )
        assert state.sides[0].matchers == 'namespace="models",pod=~"iris-predictor-[a-z0-9]+-[a-z0-9]+"'
        target.set_percent(50)
        assert target.state().canary_percent == 50
        target.promote()
        final = fake.objects[isvc_path(NS, "iris")]
        predictor = final["spec"]["predictor"]
        assert final["spec"]["canary"] == []
        assert "name" not in predictor and "name" not in predictor["model"]
        assert predictor["model"]["storageUri"] == uri
        assert predictor["minReplicas"] == 2  # the stable predictor's own settings stay
        after = target.state()
        assert after.canary is None and after.stable is not None and after.stable.percent == 100
        assert after.stable.detail == "iris-predictor"  # same Deployment, Service and scaler
        assert len(isvc_patches(fake)) == 3 * (round_ + 1)
    assert fake.refusals == []
    bodies = check_requests(fake, full, partial)
    entry = bodies[0]["spec"]["canary"][0]
    assert entry["predictor"]["name"] == "canary"
    assert entry["predictor"]["model"]["name"] == "kserve-container"  # the CRD requires it here
    assert entry["predictor"]["model"]["modelFormat"] == {"name": "xgboost"}
    assert bodies[2]["spec"]["predictor"]["model"]["name"] is None  # removed by the merge patch


def test_the_fake_api_server_refuses_what_kserve_refuses() -> None:
    """The promote patch this CLI used to send (the canary predictor copied onto the stable
    one, container name included) is refused, as is a second canary named like the stable."""
    api_client, fake = fake_api_client()
    install_kserve(fake)
    fake.objects[isvc_path(NS, "iris")] = base_isvc("iris", "Standard")
    target = kserve.InferenceServiceTarget(api_client, "iris", NS)
    target.start(10, "s3://models/iris/v2", None)
    isvc = target.get()
    old_style = {"spec": {"predictor": copy.deepcopy(isvc["spec"]["canary"][0]["predictor"]), "canary": []}}
    with pytest.raises(RolloutError, match=r"403 admission webhook .* the 'name' field is not allowed"):
        target.patch(old_style)
    old_style["spec"]["predictor"]["model"]["name"] = None  # name dropped, predictor renamed
    target.patch(old_style)
    assert target.get()["spec"]["predictor"]["name"] == "canary"
    with pytest.raises(RolloutError, match="conflicts with stable predictor name"):
        target.patch(kserve.standard_start_patch(target.get(), "s3://models/iris/v3", 10, "canary"))
    # start picks a free default name instead
    assert kserve.default_canary_name(target.get()) == "canary-2"
    target.start(10, "s3://models/iris/v3", None)
    assert target.state().canary_percent == 10


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ({"tag": "v0.20.0"}, r"KServe 0\.20\.0 runs Standard-mode canary Deployments but splits no traffic"),
        ({"gateway": False}, r"ingress\.enableGatewayApi is false in inferenceservice-config"),
        ({"disableIngressCreation": True}, r"ingress\.disableIngressCreation is true"),
        ({"ingressDomain": "svc.cluster.local"}, r"cluster-local: KServe makes no HTTPRoute"),
        ({"tag": "latest"}, r"cannot tell the KServe version from image 'kserve/kserve-controller:latest'"),
    ],
)
def test_standard_mode_refuses_where_nothing_splits(setup: dict[str, Any], message: str) -> None:
    api_client, fake = fake_api_client()
    install_kserve(fake, **setup)
    fake.objects[isvc_path(NS, "iris")] = base_isvc("iris", "Standard")
    target = kserve.InferenceServiceTarget(api_client, "iris", NS)
    with pytest.raises(RolloutError, match=message) as exc:
        target.start(10, "s3://m/v2", None)
    assert "\n" not in str(exc.value) and (
        "--mode inpod" in str(exc.value) or "--kserve-version" in str(exc.value)
    )
    assert not isvc_patches(fake)
    with pytest.raises(RolloutError, match=message):
        target.check_traffic_split()


def test_version_override_and_unreadable_controller() -> None:
    api_client, fake = fake_api_client()
    install_kserve(fake)
    fake.objects[isvc_path(NS, "iris")] = base_isvc("iris", "Standard")
    fake.raw["/apis/apps/v1/namespaces/kserve/deployments/kserve-controller-manager"] = 403
    target = kserve.InferenceServiceTarget(api_client, "iris", NS)
    with pytest.raises(
        RolloutError, match=r"cannot read the KServe controller Deployment .* 403 .*rbac\.rollout"
    ):
        target.check_traffic_split()
    kserve.InferenceServiceTarget(api_client, "iris", NS, kserve_version="0.21").check_traffic_split()
    with pytest.raises(RolloutError, match=r"KServe 0\.20\.0 runs"):
        kserve.InferenceServiceTarget(api_client, "iris", NS, kserve_version="v0.20.0").check_traffic_split()
    with pytest.raises(RolloutError, match="not a version"):
        kserve.InferenceServiceTarget(api_client, "iris", NS, kserve_version="new")
    assert kserve.controller_version("reg:5000/kserve/kserve-controller:v0.21.0-rc1@sha256:ab") == (0, 21, 0)
    assert kserve.controller_version("reg:5000/kserve/kserve-controller") is None


def started_with_an_unready_canary() -> tuple[FakePoolManager, kserve.InferenceServiceTarget]:
    """A Standard-mode InferenceService whose canary was started at 10 % and is not ready yet
    (the fake controller, as KServe's, routes nothing to it)."""
    api_client, fake = fake_api_client()
    install_kserve(fake)
    assert fake.controller is not None
    fake.controller.canaries_ready = False
    fake.objects[isvc_path(NS, "iris")] = base_isvc("iris", "Standard")
    target = kserve.InferenceServiceTarget(api_client, "iris", NS)
    target.start(10, "s3://m/v2", None)
    return fake, target


def test_status_reports_the_split_the_route_applies() -> None:
    """A canary that is not ready gets no weight from KServe: status says 0 %, not the spec's 10 %."""
    fake, target = started_with_an_unready_canary()
    state = target.state()
    assert state.canary is not None and state.canary.percent == 0 and not state.canary.ready
    assert state.stable is not None and state.stable.percent == 100
    assert any("spec asks 10% for canary; the HTTPRoute applies 0%" in n for n in state.notes)
    assert fake.controller is not None
    fake.controller.canaries_ready = True
    target.set_percent(25)
    assert target.state().canary_percent == 25
    # Without a route (e.g. deleted) nothing is split, whatever the spec says.
    del fake.objects[httproute_path(NS, "iris-predictor")]
    state = target.state()
    assert state.canary_percent == 0 and any("no HTTPRoute iris-predictor" in n for n in state.notes)
    assert kserve.route_weights({"spec": {"rules": [{"backendRefs": [{"name": "a"}]}]}}) == {"a": 100}


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
    install_kserve(fake)
    fake.reconcile(isvc_path(NS, "iris"))
    target = kserve.InferenceServiceTarget(api_client, "iris", NS, canary_name="v2")
    assert target.state().canary_percent == 20
    target.rollback()
    bodies = check_requests(fake, full, partial)
    assert [c["predictor"]["name"] for c in bodies[0]["spec"]["canary"]] == ["experimental"]
    # without a name, two canaries are ambiguous
    with pytest.raises(RolloutError, match="several canaries"):
        kserve.standard_promote_patch(obj, None)


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
    install_kserve(fake)
    fake.objects[isvc_path(NS, "iris")] = base_isvc("iris", "Standard")
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
        "ready": True,
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
    assert fake.refusals == []
    # A cluster that cannot split: one line naming the missing piece, exit 3, nothing sent.
    install_kserve(fake, gateway=False)
    before = len(fake.requests)
    assert main(["rollout", "start", *common, "--storage-uri", "s3://m/v3"]) == 3
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "enableGatewayApi is false" in out[0] and "--mode inpod" in out[0]
    assert main(["rollout", "status", *common]) == 3
    assert "enableGatewayApi is false" in capsys.readouterr().out
    assert [r.method for r in fake.requests[before:]] == ["GET"] * (len(fake.requests) - before)


def test_auto_waits_for_a_canary_kserve_routes_nothing_to() -> None:
    """Standard mode: a canary that is not ready has 0 % in the HTTPRoute; `auto` holds (it is
    coming up, not rolled back) and gives up after --max-holds, changing nothing."""
    import io

    from serving.rollout.auto import run_auto
    from serving.rollout.decision import Thresholds
    from serving.rollout.prometheus import PrometheusClient
    from serving.rollout.report import Out

    fake, target = started_with_an_unready_canary()
    stream = io.StringIO()
    sleeps: list[float] = []
    code = run_auto(
        target, PrometheusClient("http://127.0.0.1:9"), [10, 50, 100], 5.0, 5.0, Thresholds(),
        Out(json_mode=True, stream=stream), max_holds=3, sleep=sleeps.append,
    )  # fmt: skip
    events = [json.loads(line)["event"] for line in stream.getvalue().splitlines()]
    assert (code, events) == (2, ["wait", "wait", "gave_up"]) and sleeps == [5.0, 5.0]
    assert len(isvc_patches(fake)) == 1  # only the start


def sized_isvc(klass: str, low: int, high: int | None) -> dict[str, Any]:
    """A Standard-mode InferenceService whose stable predictor is sized at ``low`` pods."""
    obj = base_isvc("iris", "Standard")
    obj["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] = klass
    obj["spec"]["predictor"]["minReplicas"] = low
    if high is not None:
        obj["spec"]["predictor"]["maxReplicas"] = high
    return obj


def floors_along(base: dict[str, Any], bodies: list[Any], kserve: KServe, ready: bool) -> list[int]:
    """Replay the recorded patches through the ported webhooks of ``kserve`` and return the
    stable floor KServe's controller applies after each one (canaries ready or not)."""
    obj, floors = kserve_rules.admit_isvc(base, kserve), []
    for body in bodies:
        obj = kserve_rules.admit_isvc(merge_patch(obj, body), kserve, old=obj)
        statuses = [{"name": c["predictor"]["name"], "ready": ready, "trafficPercent": c["trafficPercent"]}
                    for c in obj["spec"].get("canary") or []]  # fmt: skip
        obj["status"] = {"canaryStatuses": statuses}
        floors.append(kserve_rules.stable_floor(obj, kserve))
    return floors


@pytest.mark.parametrize(("klass", "low", "high"), [("none", 4, 4), ("hpa", 4, 8), ("keda", 4, None)])
@pytest.mark.parametrize("finish", ["promote", "rollback"])
def test_keep_stable_capacity_holds_the_floor_at_every_step(
    klass: str, low: int, high: int | None, finish: str,
    full: jsonschema.Draft7Validator, partial: jsonschema.Draft7Validator,
) -> None:  # fmt: skip
    """Standard mode with --keep-stable-capacity: start at 10 %, step to 25/50/75 %, then promote
    or roll back. Every patch passes KServe's webhooks (master and v0.20.0), and after each one the
    stable floor KServe applies is the configured minimum (master, canary not yet ready: above
    it); the configured replicas come back with the promotion or rollback."""
    api_client, fake = fake_api_client()
    install_kserve(fake)
    base = sized_isvc(klass, low, high)
    fake.objects[isvc_path(NS, "iris")] = copy.deepcopy(base)
    target = kserve.InferenceServiceTarget(api_client, "iris", NS, keep_stable_capacity=True)
    target.start(10, "s3://models/iris/v2", None)
    seen = [target.state().capacity]
    for percent in (25, 50, 75):
        target.set_percent(percent)
        seen.append(target.state().capacity)
    getattr(target, finish)()
    assert fake.refusals == []
    bodies = check_requests(fake, full, partial)
    assert len(bodies) == 5
    # The canary's replicas follow its share as KServe would count them: ceil(4 x p / 100).
    assert [c.canary_replicas for c in seen if c] == [1, 1, 2, 3]
    assert all(c is not None and (c.effective, c.configured, c.kept) == (low, low, True) for c in seen)
    assert not any(c.lowered for c in seen if c)
    for kserve_release in (KServe("master"), KServe("v0.20.0")):
        assert floors_along(base, bodies, kserve_release, ready=True) == [low] * 5, kserve_release
    assert floors_along(base, bodies, KServe("v0.20.0"), ready=False) == [low] * 5
    master_unready = floors_along(base, bodies, KServe("master"), ready=False)
    assert master_unready[:4] == [5, 5, 6, 7] and master_unready[4] == low  # above, never below
    final = fake.objects[isvc_path(NS, "iris")]
    predictor = final["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor.get("maxReplicas")) == (low, high)
    assert kserve.KEPT_ANNOTATION not in final["metadata"]["annotations"] and final["spec"]["canary"] == []
    # Without the option the same rollout lowers the floor (KServe's own behaviour).
    fake.objects[isvc_path(NS, "iris")] = copy.deepcopy(base)
    plain = kserve.InferenceServiceTarget(api_client, "iris", NS)
    plain.start(50, "s3://models/iris/v2", None)
    capacity = plain.state().capacity
    assert capacity is not None and (capacity.effective, capacity.lowered) == (2, True)


def test_the_cli_computes_the_floor_as_the_ported_rules_do() -> None:
    """kserve.effective_stable_min (shipped) against kserve_rules.stable_min_replicas (ported
    from KServe's Go), for v0.20.0 and later, over minima, shares, pinned replicas, readiness."""
    releases = {(0, 20, 0): KServe("v0.20.0"), (0, 21, 0): KServe("master")}
    for low in (None, 0, 1, 2, 3, 5):
        for percent in (0, 1, 10, 33, 50, 100):
            for pinned in (None, 1, 2):
                for ready in (True, False):
                    obj = base_isvc("iris", "Standard")
                    obj["spec"]["predictor"].pop("minReplicas")
                    if low is not None:
                        obj["spec"]["predictor"]["minReplicas"] = low
                    entry: dict[str, Any] = {"trafficPercent": percent, "predictor": {"name": "c"}}
                    if pinned is not None:
                        entry["predictor"]["minReplicas"] = pinned
                    obj["spec"]["canary"] = [entry]
                    obj["status"] = {"canaryStatuses": [{"name": "c", "ready": ready}]}
                    for version, release in releases.items():
                        assert kserve.effective_stable_min(obj, version) == kserve_rules.stable_min_replicas(
                            obj, release
                        ), (low, percent, pinned, ready, version)


def test_cli_warns_about_the_floor_and_keeps_it_on_request(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from serving.cli import main

    api_client, fake = fake_api_client()
    install_kserve(fake)
    fake.objects[isvc_path(NS, "iris")] = sized_isvc("hpa", 4, 8)
    monkeypatch.setattr(kserve, "load_api_client", lambda context=None: api_client)
    common = ["iris", "-n", NS]
    assert main(["rollout", "start", *common, "--storage-uri", "s3://m/v2", "--percent", "50"]) == 0
    text = capsys.readouterr().out
    assert "stable minimum during the canary: 2 (configured 4; KServe subtracts 2 canary replica(s))" in text
    assert "warning: the stable predictor may shrink to 2 pod(s), below the 4" in text
    assert main(["rollout", "status", *common, "-o", "json"]) == 0
    event = json.loads(capsys.readouterr().out)
    assert event["state"]["stable_capacity"] == {
        "configured": 4, "effective": 2, "canary_replicas": 2, "kept": False, "lowered": True
    }  # fmt: skip
    assert main(["rollout", "rollback", *common]) == 1
    capsys.readouterr()
    assert main(["rollout", "start", *common, "--storage-uri", "s3://m/v2", "--percent", "50",
                 "--keep-stable-capacity"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "stable minimum during the canary: 4 (configured 4; raised to 6 by --keep-stable-capacity)" in text
    assert "warning" not in text
    assert fake.objects[isvc_path(NS, "iris")]["spec"]["predictor"]["minReplicas"] == 6
    assert main(["rollout", "promote", *common]) == 0
    assert fake.objects[isvc_path(NS, "iris")]["spec"]["predictor"]["minReplicas"] == 4
    assert fake.refusals == []
    # Not for the other modes: one line, exit 3, nothing sent.
    capsys.readouterr()
    before = len(fake.requests)
    argv = ["rollout", "start", *common, "--storage-uri", "s3://m/v3", "--keep-stable-capacity"]
    assert main([*argv, "--mode", "inpod", "--server", "http://127.0.0.1:9"]) == 3
    assert "--keep-stable-capacity is for Standard mode" in capsys.readouterr().out
    assert main([*argv, "--mode", "knative"]) == 3
    assert "--keep-stable-capacity is for Standard mode" in capsys.readouterr().out
    assert all(r.method == "GET" for r in fake.requests[before:])

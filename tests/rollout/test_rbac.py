"""The chart's optional rollout RBAC (charts/serving/templates/rbac.yaml) grants exactly what
`serving rollout` uses: every subcommand is run in every mode through the recording API server
(tests/rollout/kube_fake.py), each request is turned into the RBAC rule that allows it, and the
set must equal the rules of the Roles the chart renders. A new API call (or subcommand, or
mode) makes this fail until the Role says the same."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from serving.rollout import kserve
from tests.deploy.helm_render import render
from tests.rollout.kube_fake import (
    NS,
    FakePoolManager,
    Recorded,
    base_isvc,
    fake_api_client,
    install_kserve,
    isvc_path,
    knative_status,
)
from tests.server_process import ROOT

CHART = ROOT / "charts" / "serving"
PROMETHEUS = "http://127.0.0.1:9"  # nothing listens: analysis fails after the reads it needs
SUBCOMMAND_ARGS = {
    "start": ["--storage-uri", "s3://models/iris/v2", "--percent", "10"],
    "status": [],
    "analyze": ["--prometheus", PROMETHEUS, "--window", "1s"],
    "auto": ["--prometheus", PROMETHEUS, "--interval", "1s", "--max-holds", "1"],
    "rollback": [],
    "promote": [],
}
# Rule = (namespace, apiGroup, resource, verb, resourceName or "*")
Rule = tuple[str, str, str, str, str]
PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<resource>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?$"
)
VERBS = {"PATCH": "patch", "PUT": "update", "POST": "create", "DELETE": "delete"}


def rule_for(request: Recorded) -> Rule:
    """The RBAC rule Kubernetes checks for one request (resource, subresource, verb, name)."""
    url = urlsplit(request.url)
    match = PATH.match(url.path)
    assert match, f"not a resource URL: {request.url}"
    resource = match["resource"] + (f"/{match['sub']}" if match["sub"] else "")
    name = match["name"] or "*"
    if request.method == "GET":
        verb = "get" if match["name"] else ("watch" if parse_qs(url.query).get("watch") else "list")
    else:
        verb = VERBS[request.method] if match["name"] or request.method == "POST" else "deletecollection"
    return match["ns"] or "", match["group"] or "", resource, verb, name


def rollout_subcommands() -> set[str]:
    from serving.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    rollout = sub.choices["rollout"]
    cmds = next(a for a in rollout._actions if isinstance(a, argparse._SubParsersAction))
    return set(cmds.choices)


def modes() -> list[str]:
    from serving.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    status = next(a for a in sub.choices["rollout"]._actions if isinstance(a, argparse._SubParsersAction))
    mode = next(a for a in status.choices["status"]._actions if a.dest == "mode")
    return [m for m in mode.choices if m != "auto"]


def run_every_command(mode: str, monkeypatch: pytest.MonkeyPatch) -> FakePoolManager:
    from serving.cli import main

    api_client, fake = fake_api_client()
    install_kserve(fake)
    if mode == "knative":
        obj = base_isvc("iris", "Serverless")
        obj["status"] = knative_status("iris-predictor-00001", None, None)
    else:
        obj = base_isvc("iris", "Standard")
    fake.objects[isvc_path(NS, "iris")] = obj
    monkeypatch.setattr(kserve, "load_api_client", lambda context=None: api_client)
    common = ["iris", "-n", NS, "--mode", mode, "-o", "json"]
    if mode == "inpod":
        common += ["--server", "http://127.0.0.1:9"]
    # start first and promote last, so every command meets a canary.
    for command in ("start", "status", "analyze", "auto", "rollback", "start", "promote"):
        main(["rollout", command, *common, *SUBCOMMAND_ARGS[command]])
    return fake


def test_every_subcommand_and_mode_is_exercised() -> None:
    assert rollout_subcommands() == set(SUBCOMMAND_ARGS), "add the new subcommand to SUBCOMMAND_ARGS"
    assert set(modes()) == {"knative", "standard", "inpod"}, "run_every_command must know each mode"


def test_request_to_rule() -> None:
    def rec(method: str, url: str) -> Recorded:
        return Recorded(method, "https://kube.invalid" + url, {}, None)

    assert rule_for(rec("GET", "/apis/apps/v1/namespaces/kserve/deployments/x")) == (
        "kserve", "apps", "deployments", "get", "x",
    )  # fmt: skip
    assert rule_for(rec("GET", "/api/v1/namespaces/m/configmaps?watch=true")) == (
        "m", "", "configmaps", "watch", "*",
    )  # fmt: skip
    assert rule_for(rec("GET", "/api/v1/namespaces/m/pods/p-1/proxy")) == (
        "m",
        "",
        "pods/proxy",
        "get",
        "p-1",
    )
    assert rule_for(rec("PATCH", "/apis/g/v1/namespaces/m/things/t")) == ("m", "g", "things", "patch", "t")


def derived_rules(monkeypatch: pytest.MonkeyPatch) -> set[tuple[str, str, str, str, str]]:
    """What the CLI needs, per namespace kind: in the release namespace any object name (the
    CLI is pointed at any InferenceService), in KServe's namespace the exact names it reads."""
    rules = set()
    for mode in modes():
        fake = run_every_command(mode, monkeypatch)
        assert fake.requests or mode == "inpod"
        for request in fake.requests:
            ns, group, resource, verb, name = rule_for(request)
            where = "kserve" if ns == "kserve" else "release"
            rules.add((where, group, resource, verb, name if where == "kserve" else "*"))
    return rules


def fleet_rules() -> set[tuple[str, str, str, str, str]]:
    """In-pod fleet mode on Kubernetes (ConfigMap patch, pods read through the API server's
    proxy) needs real servers behind its pods, so its calls are recorded by
    tests/rollout/test_inpod_fleet.py, which asserts them as FLEET_CALLS; here they become rules."""
    from tests.rollout.test_inpod_fleet import FLEET_CALLS

    groups = {"inferenceservices": "serving.kserve.io"}

    def verb(method: str, resource: str) -> str:
        if method == "GET":  # the pods collection is listed; everything else is read by name
            return "list" if resource == "pods" else "get"
        return VERBS[method]

    return {
        ("release", groups.get(resource, ""), resource, verb(method, resource), "*")
        for method, resource in FLEET_CALLS
    }


def chart_rules(objects: list[dict[str, Any]]) -> set[tuple[str, str, str, str, str]]:
    rules = set()
    for role in (o for o in objects if o["kind"] == "Role"):
        where = "kserve" if role["metadata"]["namespace"] == "kserve" else "release"
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        for name in rule.get("resourceNames") or ["*"]:
                            rules.add((where, group, resource, verb, name))
    return rules


def test_chart_role_grants_exactly_what_the_cli_uses(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    needed = derived_rules(monkeypatch) | fleet_rules()
    assert ("release", "serving.kserve.io", "inferenceservices", "patch", "*") in needed
    assert ("kserve", "", "configmaps", "get", "inferenceservice-config") in needed
    subjects = [{"kind": "ServiceAccount", "name": "rollout", "namespace": "ci"}]
    release = render(CHART, {"rbac": {"rollout": {"create": True, "subjects": subjects}}}, tmp_path)
    objects = release["objects"]
    assert chart_rules(objects) == needed
    bindings = [o for o in objects if o["kind"] == "RoleBinding"]
    assert {b["metadata"]["namespace"] for b in bindings} == {"models", "kserve"}
    assert all(b["subjects"] == subjects and b["roleRef"]["kind"] == "Role" for b in bindings)
    roles = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objects if o["kind"] == "Role"}
    assert {(b["metadata"]["namespace"], b["roleRef"]["name"]) for b in bindings} == roles


def test_rbac_is_off_by_default_and_needs_subjects(tmp_path: Path) -> None:
    import helm_sdkpy

    kinds = {o["kind"] for o in render(CHART, None, tmp_path)["objects"]}
    assert not kinds & {"Role", "RoleBinding"}
    with pytest.raises(helm_sdkpy.InstallError, match=r"rbac\.rollout\.subjects: list who runs"):
        render(CHART, {"rbac": {"rollout": {"create": True}}}, tmp_path)

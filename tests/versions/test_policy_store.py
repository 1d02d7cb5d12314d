"""The traffic-policy store (serving/control/policy.py): file format, atomic writes with
distinct generations, and one process's view of it (applied, refused, retried), on a real
repository built in-process."""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.control.policy import (
    StoredPolicy,
    StoreError,
    parse_entry,
    policy_file,
    read_entry,
    render_entry,
    write_entry,
)
from serving.control.syncer import TrafficPolicies
from serving.errors import Forbidden, InvalidInput
from serving.server import Components, build, load_models
from serving.settings import Settings
from tests.versions.conftest import iris_repo
from tests.versions.kubelet import project

MODEL = "iris-xgb"


def test_parse_entry_accepts_the_documented_shape_and_refuses_the_rest() -> None:
    entry = parse_entry("generation: 3\ntraffic: {weights: {1: 90, 2: 10}, stable_version: 1}\n")
    assert entry.generation == 3
    assert entry.traffic is not None and entry.traffic["weights"] == {"1": 90.0, "2": 10.0}
    assert entry.traffic["stable_version"] == "1"
    assert parse_entry("generation: 4\ntraffic: null\n") == StoredPolicy(4, None)
    assert parse_entry(render_entry(entry)) == entry  # what writers write, readers read
    for text, expected in (
        ("generation: 1\ntraffic: {weights: {1: -5}}", "weight of version 1"),
        ("generation: 1\ntraffic: {weights: {x: 5}}", "'x' is not a version"),
        ("generation: -1\ntraffic: null", "'generation' must be an integer"),
        ("generation: true\ntraffic: null", "'generation' must be an integer"),
        ("generation: 1\ntrafic: {}", "unknown keys ['trafic']"),
        ("generation: 1\ntraffic: [1, 2]", "'traffic' must be a mapping"),
        ("{generation: 1, traffic: {weights: {1: 1}", "not valid YAML/JSON"),
        ("- 1\n- 2\n", "expected a mapping"),
        ("", "empty file"),
    ):
        with pytest.raises(StoreError, match=expected.replace("[", r"\[").replace("]", r"\]")):
            parse_entry(text)


def _write_many(directory: str, n: int) -> list[int]:
    return [
        write_entry(Path(directory), MODEL, {"weights": {"1": i}}, "test").generation for i in range(1, n + 1)
    ]


def test_concurrent_writers_get_distinct_generations_and_readers_never_see_half_a_file(
    tmp_path: Path,
) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:
        results = pool.starmap(_write_many, [(str(tmp_path), 15)] * 3)
    generations = sorted(g for r in results for g in r)
    assert generations == list(range(1, 46))  # no generation handed out twice
    _, entry = read_entry(policy_file(tmp_path, MODEL))
    assert entry is not None and entry.generation == 45
    # only the policy file and its lock remain: no temp files left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".{MODEL}.lock", f"{MODEL}.yaml"]


def test_write_to_a_read_only_store_is_refused_clearly(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only directories")
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(StoreError, match=r"cannot write the traffic policy store .*ConfigMap"):
            write_entry(tmp_path, MODEL, None, "test")
    finally:
        tmp_path.chmod(0o755)


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[Components]:
    repo = iris_repo(tmp_path / "repo", traffic={"weights": {1: 90, 2: 10}})
    store = tmp_path / "store"
    store.mkdir()
    built = build(Settings(model_repo=repo, traffic_policy_dir=store, grpc_port=-1))
    load_models(built)
    yield built
    built.repository.close()
    built.executor.shutdown(wait=False)


def _policies(parts: Components) -> TrafficPolicies:
    assert parts.control is not None
    return parts.control.policies


def _weights(parts: Components) -> dict[str, float]:
    model = parts.repository.get(MODEL)
    return dict(parts.dataplane.router.policy(model).weights)


def _metric(parts: Components, name: str) -> float:
    value = parts.metrics.registry.get_sample_value(name, {"model": MODEL})
    assert value is not None
    return value


def test_a_process_applies_refuses_and_retries_store_policies(
    parts: Components, caplog: pytest.LogCaptureFixture
) -> None:
    policies = _policies(parts)
    store = policies.directory
    assert store is not None
    policies.sync_now()
    assert policies.status(MODEL)["generation"] == 0 and _weights(parts) == {"1": 90.0, "2": 10.0}

    write_entry(store, MODEL, {"weights": {"1": 50, "2": 50}}, "test")
    asyncio.run(policies.sync())
    status = policies.status(MODEL)
    assert (status["generation"], status["source"]) == (1, "store")
    assert _weights(parts) == {"1": 50.0, "2": 50.0}
    assert _metric(parts, "serving_traffic_policy_generation") == 1
    assert _metric(parts, "serving_traffic_policy_rejected") == 0

    # A policy naming a version this process has not loaded: refused, generation 1 stays.
    path = policy_file(store, MODEL)
    path.write_text(json.dumps({"generation": 2, "traffic": {"weights": {"1": 1, "3": 99}}}))
    with caplog.at_level(logging.WARNING, "serving.control.syncer"):
        asyncio.run(policies.sync())
    status = policies.status(MODEL)
    assert status["generation"] == 1 and _weights(parts) == {"1": 50.0, "2": 50.0}
    assert status["store"]["generation"] == 2
    assert status["store"]["rejected"]["generation"] == 2
    assert "no loaded version 3" in status["store"]["rejected"]["reason"]
    assert _metric(parts, "serving_traffic_policy_rejected") == 1
    assert any("generation 2" in r.message and "refused" in r.message for r in caplog.records)

    # Broken YAML: refused as well, the reason names the problem.
    path.write_text("generation: 3\ntraffic: {weights: {1: 1}\n")
    asyncio.run(policies.sync())
    rejected = policies.status(MODEL)["store"]["rejected"]
    assert rejected["generation"] is None and "not valid YAML" in rejected["reason"]
    assert _weights(parts) == {"1": 50.0, "2": 50.0}

    # A good one again: applied, the refusal cleared.
    path.write_text(json.dumps({"generation": 4, "traffic": None}))
    asyncio.run(policies.sync())
    status = policies.status(MODEL)
    assert (status["generation"], status["source"], status["store"]["rejected"]) == (4, "config", None)
    assert _weights(parts) == {"1": 90.0, "2": 10.0}  # config.yaml's
    assert _metric(parts, "serving_traffic_policy_rejected") == 0

    # The file removed: config.yaml's policy, generation 0.
    path.unlink()
    asyncio.run(policies.sync())
    assert policies.status(MODEL)["generation"] == 0


def test_a_refused_policy_is_retried_once_the_version_loads(parts: Components) -> None:
    policies = _policies(parts)
    assert policies.directory is not None
    model = parts.repository.get(MODEL)
    version_two = model.versions.pop("2")  # as if version 2 were not there yet
    write_entry(policies.directory, MODEL, {"weights": {"2": 100}}, "test")
    asyncio.run(policies.sync())
    assert policies.status(MODEL)["store"]["rejected"] is not None
    model.versions["2"] = version_two  # it finished loading
    asyncio.run(policies.sync())  # same file, retried
    assert policies.status(MODEL)["generation"] == 1 and _weights(parts) == {"2": 100.0}


def test_configmap_updates_through_the_kubelets_link_swap_are_seen(tmp_path: Path) -> None:
    repo = iris_repo(tmp_path / "repo")
    mount = tmp_path / "mount"
    project(mount, {})
    built = build(Settings(model_repo=repo, traffic_policy_dir=mount, grpc_port=-1))
    load_models(built)
    try:
        policies = _policies(built)
        key = f"{MODEL}.yaml"
        for generation, weights in ((1, {"1": 100}), (2, {"1": 20, "2": 80}), (3, {"2": 100})):
            project(mount, {key: render_entry(StoredPolicy(generation, {"weights": weights}))})
            asyncio.run(policies.sync())
            assert policies.status(MODEL)["generation"] == generation
            assert _weights(built) == {v: float(w) for v, w in weights.items()}
        # The mount is the kubelet's: the admin API refuses to write it, and says why.
        mount.chmod(0o555)
        try:
            if os.geteuid() != 0:
                with pytest.raises(Forbidden, match="read-only"):
                    asyncio.run(policies.change(built.repository.get(MODEL), {"weights": {"1": 1}}, "t"))
        finally:
            mount.chmod(0o755)
        with pytest.raises(InvalidInput, match="no loaded version 7"):
            asyncio.run(policies.change(built.repository.get(MODEL), {"weights": {"7": 1}}, "t"))
    finally:
        built.repository.close()
        built.executor.shutdown(wait=False)

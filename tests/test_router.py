"""The router as pure code: weights, stickiness, pins, readiness, variants, shadow draws."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
from pydantic import ValidationError

from serving.core.router import CANARY, STABLE, Router, choose, key_unit, shares, stable_of
from serving.errors import ModelNotFound, ModelNotReady
from serving.modelconfig import ModelConfig, TrafficConfig
from serving.repository.store import Model, ModelVersion, VersionState

DRAWS = 20_000


def make_model(
    traffic: dict[str, object] | None = None, states: dict[str, VersionState] | None = None
) -> Model:
    config = ModelConfig.model_validate(
        {
            "platform": "xgboost",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
            "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}],
            "traffic": traffic or {},
        }
    )
    model = Model("m", Path("m"), config)
    for version, state in (states or {"1": VersionState.READY, "2": VersionState.READY}).items():
        model.versions[version] = ModelVersion("m", version, config, Path("m") / version, state=state)
    return model


def split(router: Router, model: Model, n: int = DRAWS, keys: bool = False) -> Counter[str]:
    return Counter(router.route(model, None, f"user-{i}" if keys else None).version for i in range(n))


@pytest.mark.parametrize(("w1", "w2"), [(90, 10), (50, 50), (1, 3), (0.7, 0.3)])
def test_weights_hold_within_two_points_over_20k_draws(w1: float, w2: float) -> None:
    model = make_model({"weights": {"1": w1, "2": w2}})
    counts = split(Router(random.Random(7)), model)
    assert abs(counts["2"] / DRAWS - w2 / (w1 + w2)) < 0.02, counts
    assert counts["1"] + counts["2"] == DRAWS


def test_sticky_keys_split_by_weight_too() -> None:
    model = make_model({"weights": {"1": 90, "2": 10}})
    counts = split(Router(), model, keys=True)
    assert abs(counts["2"] / DRAWS - 0.10) < 0.02, counts


def test_sticky_key_never_moves_while_weights_are_unchanged() -> None:
    model = make_model({"weights": {"1": 50, "2": 50}})
    router = Router(random.Random(1))
    first = {k: router.route(model, None, k).version for k in (f"k{i}" for i in range(2000))}
    for _ in range(3):
        assert {k: router.route(model, None, k).version for k in first} == first
    # a fresh router (another worker process, a restart) places every key identically
    assert {k: Router(random.Random(99)).route(model, None, k).version for k in first} == first
    assert set(first.values()) == {"1", "2"}


def test_small_weight_change_moves_only_the_keys_it_must() -> None:
    keys = [f"k{i}" for i in range(DRAWS)]
    before = {k: choose({"1": 90, "2": 10}, ["1", "2"], k, random.random) for k in keys}
    after = {k: choose({"1": 85, "2": 15}, ["1", "2"], k, random.random) for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    # raising the canary from 10 % to 15 % only pulls keys onto the canary, about 5 % of them
    assert all(before[k] == "1" and after[k] == "2" for k in moved)
    assert 0.03 < len(moved) / DRAWS < 0.07


def test_three_versions_and_removal_keeps_other_keys_in_place() -> None:
    keys = [f"k{i}" for i in range(5000)]
    three = {k: choose({"1": 60, "2": 30, "3": 10}, ["1", "2", "3"], k, random.random) for k in keys}
    without_3 = {k: choose({"1": 60, "2": 30, "3": 10}, ["1", "2"], k, random.random) for k in keys}
    assert all(without_3[k] == three[k] for k in keys if three[k] != "3")
    counts = Counter(three.values())
    assert abs(counts["3"] / len(keys) - 0.10) < 0.02


@pytest.mark.parametrize(("weights", "only"), [({"1": 0, "2": 100}, "2"), ({"1": 100, "2": 0}, "1")])
def test_zero_and_hundred(weights: dict[str, float], only: str) -> None:
    model = make_model({"weights": weights})
    router = Router(random.Random(3))
    assert set(split(router, model, 5000)) == {only}
    assert set(split(router, model, 5000, keys=True)) == {only}


def test_version_not_ready_gets_no_traffic_and_the_rest_renormalise() -> None:
    for state in (
        VersionState.LOADING,
        VersionState.FAILED,
        VersionState.UNLOADING,
        VersionState.UNAVAILABLE,
    ):
        model = make_model(
            {"weights": {"1": 60, "2": 30, "3": 10}},
            {"1": VersionState.READY, "2": state, "3": VersionState.READY},
        )
        counts = split(Router(random.Random(5)), model)
        assert "2" not in counts
        assert abs(counts["3"] / DRAWS - 10 / 70) < 0.02, counts
    assert shares({"1": 60, "2": 30, "3": 10}, ["1", "3"]) == pytest.approx({"1": 6 / 7, "3": 1 / 7})


def test_when_no_weighted_version_is_ready_the_latest_ready_serves() -> None:
    model = make_model({"weights": {"1": 100}}, {"1": VersionState.UNLOADING, "2": VersionState.READY})
    assert set(split(Router(), model, 100)) == {"2"}


def test_no_weights_means_latest_ready() -> None:
    model = make_model(None, {"1": VersionState.READY, "2": VersionState.READY, "3": VersionState.LOADING})
    assert set(split(Router(), model, 200)) == {"2"}
    assert Router().select(model, None).variant == STABLE


def test_nothing_ready_is_a_503_with_reasons() -> None:
    model = make_model({"weights": {"1": 1}}, {"1": VersionState.FAILED})
    model.versions["1"].reason = "model.json: corrupt"
    with pytest.raises(ModelNotReady, match="corrupt"):
        Router().route(model, None)


def test_pin_always_wins() -> None:
    model = make_model({"weights": {"1": 100, "2": 0}})
    router = Router()
    assert {router.route(model, "2", f"k{i}").version for i in range(100)} == {"2"}
    assert router.select(model, "2").variant == CANARY
    assert router.select(model, "1").variant == STABLE
    with pytest.raises(ModelNotFound):
        router.route(model, "7")
    model.versions["2"].state = VersionState.UNLOADING
    with pytest.raises(ModelNotReady, match="UNLOADING"):
        router.route(model, "2")


def test_variant_labels() -> None:
    model = make_model({"weights": {"1": 90, "2": 10}})
    router = Router(random.Random(11))
    by_version = {r.entry.version: r.variant for r in (router.select(model, None) for _ in range(500))}
    assert by_version == {"1": STABLE, "2": CANARY}
    # past 50 % the incumbent is still the stable one; an explicit stable_version overrides
    assert stable_of(TrafficConfig(weights={"1": 25, "2": 75}), ["1", "2"]) == "1"
    assert stable_of(TrafficConfig(weights={"1": 25, "2": 75}, stable_version="2"), ["1", "2"]) == "2"
    assert stable_of(TrafficConfig(weights={"1": 0, "2": 100}), ["1", "2"]) == "2"
    assert stable_of(TrafficConfig(), ["1", "2"]) == "2"


def test_runtime_policy_overrides_config_and_resets() -> None:
    model = make_model({"weights": {"1": 100}})
    router = Router(random.Random(2))
    router.set_policy("m", TrafficConfig(weights={"2": 1}))
    assert router.policy_source("m") == "runtime"
    assert set(split(router, model, 200)) == {"2"}
    router.set_policy("m", None)
    assert router.policy_source("m") == "config"
    assert set(split(router, model, 200)) == {"1"}


def test_shadow_fraction_and_never_shadow_onto_itself() -> None:
    model = make_model({"weights": {"1": 100}, "shadow_version": "2", "shadow_fraction": 0.25})
    router = Router(random.Random(4))
    routes = [router.select(model, None) for _ in range(DRAWS)]
    shadowed = sum(r.shadow is not None for r in routes)
    assert abs(shadowed / DRAWS - 0.25) < 0.02
    assert all(r.shadow is None or r.shadow.version == "2" for r in routes)
    assert router.select(model, "2").shadow is None  # the shadow version itself answered
    model.versions["2"].state = VersionState.LOADING
    assert all(router.select(model, None).shadow is None for _ in range(200))


def test_key_unit_is_in_the_open_interval_and_spreads() -> None:
    values = [key_unit(f"k{i}", "1") for i in range(DRAWS)]
    assert all(0.0 < v < 1.0 for v in values)
    assert abs(sum(values) / DRAWS - 0.5) < 0.01


@pytest.mark.parametrize(
    "bad",
    [
        {"weights": {"one": 1}},
        {"weights": {"1": -1}},
        {"weights": {"1": 0, "2": 0}},
        {"weights": {"1": float("nan")}},
        {"shadow_fraction": 1.5},
        {"shadow_version": "../2"},
        {"sticky_header": "bad header"},
        {"unknown": 1},
    ],
)
def test_policy_validation(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TrafficConfig.model_validate(bad)


def test_yaml_style_int_versions_are_accepted() -> None:
    traffic = TrafficConfig.model_validate({"weights": {1: 90, 2: 10}, "shadow_version": 2})
    assert traffic.weights == {"1": 90.0, "2": 10.0} and traffic.shadow_version == "2"

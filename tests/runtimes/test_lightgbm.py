"""Native LightGBM runtime: outputs equal ``Booster.predict``'s (≤ 1e-6) on both paths, the
single-row fast path and the public API (every test that takes ``fast`` runs both, so CI runs the
fallback), for every objective, batch size, dtype, categorical code and missing value; the
load-time guard falls back when the fast path is wrong or unreachable."""

from __future__ import annotations

import logging
import pickle
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serving.errors import ModelLoadError
from serving.modelconfig import ModelConfig
from serving.runtimes import lightgbm as lgbm_runtime
from serving.runtimes.base import load_runtime
from serving.runtimes.fastpath import LIBRARY, probe_rows
from serving.runtimes.lightgbm import FAST, LightGBMRuntime
from serving.settings import Settings
from tests.server_process import DEMO_REPO
from tests.tinymodels import spec, train_lgbm

_DEMO_TEXT = (DEMO_REPO / "cancer-lgbm" / "1" / "model.txt").read_bytes()
CUT_MODEL = _DEMO_TEXT[: len(_DEMO_TEXT) // 3]

N_FEATURES = 8
TOLERANCE = 1e-6


def config_for(
    booster: Any, output_shape: list[int], dtype: str = "FP32", out_dtype: str = "FP64", **extra: Any
) -> ModelConfig:
    return ModelConfig.model_validate(
        {
            "platform": "lightgbm",
            "inputs": [spec("input", dtype, [-1, booster.num_feature()])],
            "outputs": [spec("output", out_dtype, output_shape)],
            **extra,
        }
    )


def runtime_for(
    booster: Any,
    tmp_path: Path,
    output_shape: list[int],
    fast: bool = True,
    dtype: str = "FP32",
    out_dtype: str = "FP64",
    settings: Settings | None = None,
    **extra: Any,
) -> LightGBMRuntime:
    path = tmp_path / "model.txt"
    booster.save_model(str(path))
    settings = settings or Settings(fast_path=fast)
    return LightGBMRuntime(path, config_for(booster, output_shape, dtype, out_dtype, **extra), settings)


def rows(n: int, seed: int = 0, dtype: Any = np.float32) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).normal(size=(n, N_FEATURES)).astype(dtype)


def assert_path(runtime: LightGBMRuntime, fast: bool) -> None:
    small = runtime.predict_paths["small"]
    assert small.path == (FAST if fast else LIBRARY), small
    assert runtime.predict_paths["large"].path == LIBRARY


@pytest.fixture(params=[True, False], ids=["fast", "library"])
def fast(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


OBJECTIVES = [
    ({"objective": "binary"}, [-1], False),
    ({"objective": "multiclass", "num_class": 3}, [-1, 3], False),
    ({"objective": "regression"}, [-1], False),
    ({"objective": "binary"}, [-1], True),
    ({"objective": "multiclass", "num_class": 4}, [-1, 4], True),
]
IDS = ["binary", "multiclass", "regression", "binary-raw", "multiclass-raw"]


@pytest.mark.parametrize(("params", "shape", "raw"), OBJECTIVES, ids=IDS)
@pytest.mark.parametrize("n", [1, 7, 31, 32, 600])  # 31/32: the fast path's edge; 600: many threads
def test_predict_equals_booster_predict(
    tmp_path: Path, fast: bool, params: dict[str, Any], shape: list[int], raw: bool, n: int
) -> None:
    booster = train_lgbm(n_features=N_FEATURES, rounds=20, **params)
    runtime = runtime_for(booster, tmp_path, shape, fast, raw_score=raw)
    assert_path(runtime, fast)
    x = rows(n)
    got = runtime.predict({"input": x})["output"]
    expected = booster.predict(x, raw_score=raw)
    assert got.dtype == np.float64 and got.shape == expected.shape == (n, *shape[1:])
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)
    if raw:  # raw scores really are raw: not the transformed outputs
        assert np.abs(got - booster.predict(x)).max() > 1e-3


@pytest.mark.parametrize("dtype", ["FP32", "FP64"])
def test_input_and_output_dtypes(tmp_path: Path, fast: bool, dtype: str) -> None:
    booster = train_lgbm(n_features=N_FEATURES, objective="regression", rounds=15)
    x = rows(5, dtype=np.float32 if dtype == "FP32" else np.float64)
    expected = booster.predict(x)
    exact = runtime_for(booster, tmp_path, [-1], fast, dtype=dtype, out_dtype="FP64")
    np.testing.assert_allclose(exact.predict({"input": x})["output"], expected, rtol=0, atol=TOLERANCE)
    narrow = runtime_for(booster, tmp_path, [-1], fast, dtype=dtype, out_dtype="FP32")
    got = narrow.predict({"input": x})["output"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected.astype(np.float32))  # one rounding, at the end


def test_strided_and_fortran_inputs(tmp_path: Path, fast: bool) -> None:
    booster = train_lgbm(n_features=N_FEATURES, rounds=10)
    runtime = runtime_for(booster, tmp_path, [-1], fast)
    for x in (np.asfortranarray(rows(5)), rows(10)[::2], rows(6)[:, :][1:4]):
        np.testing.assert_allclose(
            runtime.predict({"input": x})["output"], booster.predict(np.ascontiguousarray(x)), atol=TOLERANCE
        )


def edge_rows(n_features: int, categorical: tuple[int, ...]) -> np.ndarray[Any, Any]:
    """NaN, ±large, ±inf, negative and unseen category codes, mixed into ordinary rows."""
    rng = np.random.default_rng(5)
    base = rng.normal(size=(24, n_features))
    for column in categorical:
        base[:, column] = rng.integers(0, 10, size=len(base))
    values = [np.nan, 1e30, -1e30, np.inf, -np.inf, 3.0e38, -1.0, 10.0, 11.0, 1e6, 2.0**31, 0.5, 7.9]
    for i, value in enumerate(values):
        base[i, i % n_features] = value
        base[i, (i + 3) % n_features] = value
    base[len(values), :] = np.nan
    for column in categorical:  # every unseen code in the categorical columns alone
        base[len(values) + 1 :, column] = [10, 12, 99, 1e6, -3, np.nan, 4.5, 1e30, 0, 9][
            : len(base) - len(values) - 1
        ]
    return base


@pytest.mark.parametrize("objective", ["binary", "multiclass", "regression"])
def test_categorical_features_and_missing_values(tmp_path: Path, fast: bool, objective: str) -> None:
    params: dict[str, Any] = {"num_class": 3} if objective == "multiclass" else {}
    booster = train_lgbm(
        n_features=N_FEATURES, objective=objective, rounds=30, categorical=(2, 5), missing=0.1, **params
    )
    model = booster.dump_model()
    decisions = {
        node.get("decision_type") for tree in model["tree_info"] for node in _nodes(tree["tree_structure"])
    }
    assert "==" in decisions, "the booster must have categorical splits for this test to mean anything"
    shape = [-1, 3] if objective == "multiclass" else [-1]
    runtime = runtime_for(booster, tmp_path, shape, fast, dtype="FP64")
    assert_path(runtime, fast)
    x = np.concatenate([edge_rows(N_FEATURES, (2, 5)), probe_rows(N_FEATURES)])
    expected = booster.predict(x)
    for batch in (1, 5, len(x)):
        got = np.concatenate(
            [runtime.predict({"input": x[i : i + batch]})["output"] for i in range(0, len(x), batch)]
        )
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)


def _nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    found = [node]
    for child in ("left_child", "right_child"):
        if child in node:
            found += _nodes(node[child])
    return found


def test_guard_falls_back_when_the_fast_path_is_wrong(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A fast path bound to the wrong prediction type (raw scores for probabilities): the guard
    sees it at load, and the version serves through Booster.predict, correctly."""
    booster = train_lgbm(n_features=N_FEATURES, rounds=10)
    monkeypatch.setattr(lgbm_runtime, "_PREDICT_NORMAL", 1)  # C_API_PREDICT_RAW_SCORE
    with caplog.at_level(logging.WARNING, logger="serving.runtimes.lightgbm"):
        runtime = runtime_for(booster, tmp_path, [-1])
    small = runtime.predict_paths["small"]
    assert small.path == LIBRARY
    assert "differs from the library by" in small.reason and "tolerance 1e-06" in small.reason
    assert "single-row fast path is not used" in caplog.text
    x = rows(3)
    np.testing.assert_allclose(runtime.predict({"input": x})["output"], booster.predict(x), atol=TOLERANCE)
    assert not runtime._configs  # the rejected configurations were freed


def test_guard_checks_the_tolerance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fast path off by 1e-4 passes a 1e-3 tolerance and fails the default 1e-6."""
    booster = train_lgbm(n_features=N_FEATURES, objective="regression", rounds=10)
    exact = LightGBMRuntime._fast_predict

    def nudged(self: LightGBMRuntime, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        return exact(self, x) + 1e-4

    monkeypatch.setattr(LightGBMRuntime, "_fast_predict", nudged)
    assert runtime_for(booster, tmp_path, [-1]).predict_paths["small"].path == LIBRARY
    loose = Settings(fast_path_tolerance=1e-3)
    assert runtime_for(booster, tmp_path, [-1], settings=loose).predict_paths["small"].path == FAST


def test_guard_falls_back_when_a_symbol_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    booster = train_lgbm(n_features=N_FEATURES, rounds=5)
    monkeypatch.setattr(lgbm_runtime, "_SYMBOLS", (*lgbm_runtime._SYMBOLS, "LGBM_NoSuchEntryPoint"))
    monkeypatch.setattr(lgbm_runtime, "_lib", None)
    monkeypatch.setattr(lgbm_runtime, "_lib_problem", "")
    runtime = runtime_for(booster, tmp_path, [-1])
    assert runtime.predict_paths["small"].path == LIBRARY
    assert "has no LGBM_NoSuchEntryPoint" in runtime.predict_paths["small"].reason
    x = rows(2)
    np.testing.assert_allclose(runtime.predict({"input": x})["output"], booster.predict(x), atol=TOLERANCE)


def test_fast_path_can_be_turned_off(tmp_path: Path) -> None:
    booster = train_lgbm(n_features=N_FEATURES, rounds=5)
    by_config = runtime_for(booster, tmp_path, [-1], fast_path=False)
    assert by_config.predict_paths["small"].reason == "the fast path is turned off (config.yaml)"
    by_settings = runtime_for(booster, tmp_path, [-1], fast=False)
    assert by_settings.predict_paths["small"].reason == "the fast path is turned off (SERVING_FAST_PATH)"
    no_rows = runtime_for(booster, tmp_path, [-1], settings=Settings(lightgbm_fast_path_max_rows=0))
    assert no_rows.predict_paths["small"].path == LIBRARY


def test_concurrent_predicts_are_correct(tmp_path: Path, fast: bool) -> None:
    booster = train_lgbm(n_features=N_FEATURES, rounds=20, objective="multiclass", num_class=3)
    runtime = runtime_for(booster, tmp_path, [-1, 3], fast)
    inputs = [rows(1 + i % 5, seed=i) for i in range(16)]
    expected = [booster.predict(x) for x in inputs]
    failures: list[str] = []

    def work(offset: int) -> None:
        for step in range(40):
            i = (offset + step) % len(inputs)
            got = runtime.predict({"input": inputs[i]})["output"]
            if not np.allclose(got, expected[i], rtol=0, atol=TOLERANCE):
                failures.append(f"thread {offset} input {i}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures
    if fast:
        assert len(runtime._configs) == 5  # one per thread: the guard's and each worker's
    runtime.close()
    assert not runtime._configs


def test_feature_count_and_output_shape_are_checked(tmp_path: Path) -> None:
    booster = train_lgbm(n_features=N_FEATURES, objective="multiclass", num_class=3)
    with pytest.raises(
        ModelLoadError,
        match=r"gives 3 values per row \(output shape \[-1, 3\]\) but config\.yaml declares output shape \[-1\]",
    ):
        runtime_for(booster, tmp_path, [-1])
    with pytest.raises(ModelLoadError, match=r"declares output shape \[-1, 4\]"):
        runtime_for(booster, tmp_path, [-1, 4])
    config = ModelConfig.model_validate(
        {
            "platform": "lightgbm",
            "inputs": [spec("input", "FP32", [-1, N_FEATURES + 1])],
            "outputs": [spec("output", "FP32", [-1, 3])],
        }
    )
    with pytest.raises(
        ModelLoadError, match=f"takes {N_FEATURES} features but config.yaml declares {N_FEATURES + 1}"
    ):
        LightGBMRuntime(tmp_path / "model.txt", config, Settings())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"tree\nversion=v4\nnum_class=1\n", "truncated LightGBM model"),
        # cut inside its trees (an interrupted copy): LightGBM's parser used to abort the process
        (CUT_MODEL, "truncated LightGBM model (no 'end of trees' line after the trees)"),
        (b"tree\nversion=v4\nnum_class=1\nend of trees\n", "LightGBM cannot load it: "),
        (b"\x80\x04\x95 not text", "not a LightGBM text model (not UTF-8 text)"),
        (b'{"name": "tree"}', "not a LightGBM text model (Booster.save_model output starts with 'tree')"),
    ],
    ids=["header-only", "cut-in-trees", "no-trees", "binary", "json"],
)
def test_bad_files_are_clean_load_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "model.txt"
    path.write_bytes(content)
    config = config_for(train_lgbm(n_features=2), [-1])
    with pytest.raises(ModelLoadError) as info:
        LightGBMRuntime(path, config, Settings())
    assert info.value.message.startswith(f"{path}: ") and message in info.value.message


def test_a_pickled_booster_is_refused_without_unpickling(tmp_path: Path) -> None:
    booster = train_lgbm(n_features=2)
    (tmp_path / "model.txt").write_bytes(pickle.dumps(booster))
    with pytest.raises(ModelLoadError, match="not a LightGBM text model"):
        LightGBMRuntime(tmp_path / "model.txt", config_for(booster, [-1]), Settings())


def test_load_runtime_finds_model_txt_and_kserve_bst(tmp_path: Path) -> None:
    booster = train_lgbm(n_features=3)
    config = config_for(booster, [-1])
    with pytest.raises(ModelLoadError, match=r"no model\.txt or model\.bst for platform 'lightgbm'"):
        load_runtime(config, tmp_path, Settings())
    booster.save_model(str(tmp_path / "model.bst"))
    runtime = load_runtime(config, tmp_path, Settings())
    x = np.zeros((1, 3), dtype=np.float32)
    np.testing.assert_allclose(runtime.predict({"input": x})["output"], booster.predict(x), atol=TOLERANCE)
    runtime.close()


def test_warmup_rows_are_among_the_probe_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fast path wrong only on the configured warm-up row is caught."""
    booster = train_lgbm(n_features=N_FEATURES, objective="regression", rounds=10)
    marker = [0.25] * N_FEATURES
    exact = LightGBMRuntime._fast_predict

    def wrong_on_marker(self: LightGBMRuntime, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        out = exact(self, x)
        hit = np.all(np.asarray(x) == np.float32(0.25), axis=1)
        return np.where(hit, out + 1.0, out)

    monkeypatch.setattr(LightGBMRuntime, "_fast_predict", wrong_on_marker)
    plain = runtime_for(booster, tmp_path, [-1])
    assert plain.predict_paths["small"].path == FAST
    warmed = runtime_for(booster, tmp_path, [-1], warmup={"inputs": {"input": [marker]}})
    assert warmed.predict_paths["small"].path == LIBRARY

"""Native XGBoost runtime: our direct ``XGBoosterPredictFromDense`` call predicts exactly what
``Booster.inplace_predict`` predicts, for every objective, batch size, dtype and layout."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from serving.errors import ModelLoadError
from serving.modelconfig import ModelConfig
from serving.runtimes.xgboost import XGBoostRuntime
from serving.settings import Settings
from tests.tinymodels import spec, train_booster

N_FEATURES = 8


def runtime_for(
    booster: xgb.Booster, tmp_path: Path, output_shape: list[int], settings: Settings | None = None
) -> XGBoostRuntime:
    path = tmp_path / "model.ubj"
    booster.save_model(str(path))
    config = ModelConfig.model_validate(
        {
            "platform": "xgboost",
            "inputs": [spec("input", "FP32", [-1, booster.num_features()])],
            "outputs": [spec("output", "FP32", output_shape)],
        }
    )
    # fast_path_max_rows=0: these tests pin the direct C call to inplace_predict bit for bit;
    # the ONNX twin for small batches is tested (within its tolerance) in test_fastpath.py.
    return XGBoostRuntime(path, config, settings or Settings(fast_path_max_rows=0))


def rows(n: int, seed: int = 0, dtype: Any = np.float32) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).normal(size=(n, N_FEATURES)).astype(dtype)


OBJECTIVES: list[tuple[dict[str, Any], list[int]]] = [
    ({"objective": "binary:logistic"}, [-1]),
    ({"objective": "multi:softprob", "num_class": 3}, [-1, 3]),
    ({"objective": "reg:squarederror"}, [-1]),
    ({"objective": "binary:logitraw"}, [-1]),
]


@pytest.mark.parametrize(("params", "shape"), OBJECTIVES, ids=[p["objective"] for p, _ in OBJECTIVES])
@pytest.mark.parametrize("n", [1, 7, 600])  # 600 >= large_batch_rows: the multi-threaded booster
def test_predict_equals_inplace_predict(
    tmp_path: Path, params: dict[str, Any], shape: list[int], n: int
) -> None:
    booster = train_booster(n_features=N_FEATURES, rounds=20, depth=5, **params)
    runtime = runtime_for(booster, tmp_path, shape)
    x = rows(n)
    got = runtime.predict({"input": x})["output"]
    expected = booster.inplace_predict(x)
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert got.shape[0] == n and got.ndim == len(shape)
    np.testing.assert_array_equal(got, expected)


def test_float64_non_contiguous_and_missing_values(tmp_path: Path) -> None:
    booster = train_booster(n_features=N_FEATURES, rounds=10)
    runtime = runtime_for(booster, tmp_path, [-1])
    x64 = rows(5, dtype=np.float64)
    np.testing.assert_array_equal(runtime.predict({"input": x64})["output"], booster.inplace_predict(x64))
    fortran = np.asfortranarray(rows(5))
    np.testing.assert_array_equal(
        runtime.predict({"input": fortran})["output"], booster.inplace_predict(fortran)
    )
    strided = rows(10)[::2]
    np.testing.assert_array_equal(
        runtime.predict({"input": strided})["output"], booster.inplace_predict(strided)
    )
    missing = rows(3)
    missing[0, 0] = missing[2, 5] = np.nan
    np.testing.assert_array_equal(
        runtime.predict({"input": missing})["output"], booster.inplace_predict(missing)
    )


def test_results_are_not_overwritten_by_the_next_call(tmp_path: Path) -> None:
    """XGBoost reuses its output buffer per thread: each result must be a copy."""
    booster = train_booster(n_features=N_FEATURES, rounds=10)
    runtime = runtime_for(booster, tmp_path, [-1])
    first = runtime.predict({"input": rows(4, seed=1)})["output"]
    kept = first.copy()
    runtime.predict({"input": rows(4, seed=2)})
    np.testing.assert_array_equal(first, kept)


def test_concurrent_predicts_are_correct(tmp_path: Path) -> None:
    booster = train_booster(n_features=N_FEATURES, rounds=20, depth=4)
    runtime = runtime_for(booster, tmp_path, [-1])
    inputs = [rows(1 + i % 5, seed=i) for i in range(16)]
    expected = [booster.inplace_predict(x) for x in inputs]
    failures: list[str] = []

    def work(offset: int) -> None:
        for step in range(50):
            i = (offset + step) % len(inputs)
            if not np.array_equal(runtime.predict({"input": inputs[i]})["output"], expected[i]):
                failures.append(f"thread {offset} input {i}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures


def test_feature_count_and_output_rank_are_checked(tmp_path: Path) -> None:
    booster = train_booster(n_features=N_FEATURES, objective="multi:softprob", num_class=3)
    with pytest.raises(ModelLoadError, match=r"config\.yaml declares output rank 1"):
        runtime_for(booster, tmp_path, [-1])
    path = tmp_path / "model.ubj"
    config = ModelConfig.model_validate(
        {
            "platform": "xgboost",
            "inputs": [spec("input", "FP32", [-1, N_FEATURES + 1])],
            "outputs": [spec("output", "FP32", [-1, 3])],
        }
    )
    with pytest.raises(
        ModelLoadError, match=f"takes {N_FEATURES} features but config.yaml declares {N_FEATURES + 1}"
    ):
        XGBoostRuntime(path, config, Settings())


def test_corrupt_file_is_a_clean_load_error(tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    path.write_text('{"learner": ')
    config = ModelConfig.model_validate(
        {
            "platform": "xgboost",
            "inputs": [spec("input", "FP32", [-1, 2])],
            "outputs": [spec("output", "FP32", [-1])],
        }
    )
    with pytest.raises(ModelLoadError) as info:
        XGBoostRuntime(path, config, Settings())
    assert info.value.message.startswith(f"{path}: XGBoost cannot load it: ")
    assert "xgboost/src" not in info.value.message


def test_reused_per_thread_proxy_gives_each_call_its_own_answer(tmp_path: Path) -> None:
    """The runtime keeps one proxy DMatrix per thread across calls (see _CallState): every
    call, whatever its batch size, dtype or output shape, must still see only its own input."""
    binary = train_booster(n_features=N_FEATURES, rounds=30, depth=6)
    multi = train_booster(n_features=N_FEATURES, rounds=10, objective="multi:softprob", num_class=4)
    runtimes = [(binary, runtime_for(binary, tmp_path, [-1])), (multi, runtime_for(multi, tmp_path, [-1, 4]))]
    for step, n in enumerate([1, 600, 3, 1, 64, 2, 513, 1]):
        x = rows(n, seed=step, dtype=np.float64 if step % 3 == 0 else np.float32)
        for booster, runtime in runtimes:
            np.testing.assert_array_equal(runtime.predict({"input": x})["output"], booster.inplace_predict(x))
    for _, runtime in runtimes:
        assert runtime._states  # a proxy was created for this thread ...
        runtime.close()
        assert not runtime._states  # ... and freed on close

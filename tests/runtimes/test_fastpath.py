"""Guarded fast paths of native boosters (serving/runtimes/fastpath.py): the ONNX twin and
XGBoost's direct C call serve only after matching ``Booster.inplace_predict``; a mismatched
or broken fast path falls back to the library with the reason, and the library path itself
(``fast_path: false``) serves every demo model with the same answers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import xgboost as xgb

from serving.modelconfig import ModelConfig, load_config
from serving.runtimes import fastpath
from serving.runtimes import xgboost as xgb_runtime
from serving.runtimes.fastpath import LIBRARY, PathChoice, cached_build, disagreement, probe_rows
from serving.runtimes.xgboost import DIRECT, TWIN, XGBoostRuntime
from serving.settings import Settings
from tests.server_process import DEMO_REPO, ServerProcess
from tests.tinymodels import spec, train_booster

N_FEATURES = 8
TOLERANCE = 1e-6


def config_for(booster: xgb.Booster, output_shape: list[int], **extra: Any) -> ModelConfig:
    return ModelConfig.model_validate(
        {
            "platform": "xgboost",
            "inputs": [spec("input", "FP32", [-1, booster.num_features()])],
            "outputs": [spec("output", "FP32", output_shape)],
            **extra,
        }
    )


def load(
    booster: xgb.Booster,
    tmp_path: Path,
    output_shape: list[int],
    settings: Settings | None = None,
    **extra: Any,
) -> XGBoostRuntime:
    path = tmp_path / "model.ubj"
    booster.save_model(str(path))
    settings = settings or Settings(fast_path_cache_dir=tmp_path / "cache")
    return XGBoostRuntime(path, config_for(booster, output_shape, **extra), settings)


def test_probe_rows_hold_the_edge_cases() -> None:
    rows = probe_rows(5, extra=np.full((2, 5), 7.0))
    assert rows.dtype == np.float32 and rows.shape[1] == 5
    assert np.isnan(rows).all(axis=1).any(), "an all-missing row"
    assert np.isposinf(rows).all(axis=1).any() and np.isneginf(rows).all(axis=1).any()
    assert (rows == 1e30).all(axis=1).any() and (rows == -1e30).all(axis=1).any()
    assert (rows == 7.0).all(axis=1).sum() == 2, "the extra (warm-up) rows are included"
    assert (rows == -1.0).all(axis=1).any() and (rows == 2.0**31).all(axis=1).any(), "odd category codes"


OBJECTIVES: list[tuple[dict[str, Any], list[int]]] = [
    ({"objective": "binary:logistic"}, [-1]),
    ({"objective": "multi:softprob", "num_class": 3}, [-1, 3]),
    ({"objective": "reg:squarederror"}, [-1]),
]


@pytest.mark.parametrize(("params", "shape"), OBJECTIVES, ids=[p["objective"] for p, _ in OBJECTIVES])
def test_twin_serves_small_batches_within_tolerance(
    tmp_path: Path, params: dict[str, Any], shape: list[int]
) -> None:
    booster = train_booster(n_features=N_FEATURES, rounds=30, depth=6, **params)
    runtime = load(booster, tmp_path, shape)
    assert runtime.predict_paths == {"small": PathChoice(TWIN), "large": PathChoice(DIRECT)}
    rng = np.random.default_rng(3)
    for n in (1, 2, 8, 31, 32, 700):
        x = rng.normal(scale=2.0, size=(n, N_FEATURES)).astype(np.float32)
        x[rng.random(x.shape) < 0.1] = np.nan
        got = runtime.predict({"input": x})["output"]
        expected = booster.inplace_predict(x)
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)
        if n >= 32:  # at or above fast_path_max_rows: XGBoost itself, bit for bit
            np.testing.assert_array_equal(got, expected)
    runtime.close()


def test_an_unsupported_objective_falls_back_for_small_batches_only(tmp_path: Path) -> None:
    """onnxmltools cannot express binary:logitraw's raw margin as XGBoost does: the guard
    (or the converter) refuses the twin, and small batches go through the direct call."""
    booster = train_booster(n_features=N_FEATURES, rounds=10, objective="binary:logitraw")
    runtime = load(booster, tmp_path, [-1])
    small, large = runtime.predict_paths["small"], runtime.predict_paths["large"]
    assert large == PathChoice(DIRECT)
    if small.path == TWIN:  # a converter that learned logitraw: then it must agree
        x = probe_rows(N_FEATURES)
        np.testing.assert_allclose(
            runtime.predict({"input": x[:1]})["output"], booster.inplace_predict(x[:1]), atol=TOLERANCE
        )
    else:
        assert small.path == DIRECT and small.reason.startswith(f"{TWIN}: ")
    x = np.random.default_rng(0).normal(size=(5, N_FEATURES)).astype(np.float32)
    np.testing.assert_allclose(
        runtime.predict({"input": x})["output"], booster.inplace_predict(x), atol=TOLERANCE
    )


def test_a_mismatched_twin_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    """A deliberately wrong fast path (every output off by 1e-3) never serves."""
    real_reader = fastpath.twin_reader

    def off_by_a_little(session: Any, library_output: Any) -> Any:
        twin = real_reader(session, library_output)
        return lambda x: twin(x) + np.float32(1e-3)

    monkeypatch.setattr(fastpath, "twin_reader", off_by_a_little)
    booster = train_booster(n_features=N_FEATURES, rounds=10)
    with caplog.at_level(logging.WARNING, logger="serving.runtimes.xgboost"):
        runtime = load(booster, tmp_path, [-1])
    small = runtime.predict_paths["small"]
    assert small.path == DIRECT
    assert "differs from the library by 0.001" in small.reason
    assert any("no ONNX twin" in r.getMessage() for r in caplog.records)
    x = np.random.default_rng(1).normal(size=(3, N_FEATURES)).astype(np.float32)
    np.testing.assert_array_equal(runtime.predict({"input": x})["output"], booster.inplace_predict(x))


def test_a_mismatched_direct_call_falls_back_to_the_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If XGBoost's private entry point ever answered differently (a changed argument
    layout, say), the guard must notice it and serve through inplace_predict."""
    real_direct = XGBoostRuntime._direct

    def wrong(self: XGBoostRuntime, x: Any) -> Any:
        return real_direct(self, x)[::-1].copy()  # answers for the wrong rows

    monkeypatch.setattr(XGBoostRuntime, "_direct", wrong)
    booster = train_booster(n_features=N_FEATURES, rounds=10)
    runtime = load(booster, tmp_path, [-1], Settings(fast_path_max_rows=0))
    assert runtime.predict_paths["large"].path == LIBRARY
    assert runtime.predict_paths["large"].reason.startswith(
        "direct C call: in one batch, the fast path differs"
    )
    x = np.random.default_rng(2).normal(size=(6, N_FEATURES)).astype(np.float32)
    np.testing.assert_array_equal(runtime.predict({"input": x})["output"], booster.inplace_predict(x))


def test_missing_entry_points_and_a_failing_converter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(xgb_runtime, "_DIRECT", False)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("converter exploded")

    import onnxmltools

    monkeypatch.setattr(onnxmltools, "convert_xgboost", broken)
    booster = train_booster(n_features=N_FEATURES, rounds=10)
    runtime = load(booster, tmp_path, [-1], Settings(fast_path_cache_dir=tmp_path / "empty-cache"))
    assert runtime.predict_paths["large"] == PathChoice(LIBRARY, "XGBoost's C entry points are missing")
    small = runtime.predict_paths["small"]
    assert small.path == LIBRARY and "conversion failed: RuntimeError: converter exploded" in small.reason
    x = np.random.default_rng(4).normal(size=(2, N_FEATURES)).astype(np.float32)
    np.testing.assert_array_equal(runtime.predict({"input": x})["output"], booster.inplace_predict(x))


def test_turned_off_globally_and_per_model(tmp_path: Path) -> None:
    booster = train_booster(n_features=N_FEATURES, rounds=10)
    off = load(booster, tmp_path, [-1], Settings(fast_path=False))
    assert {c.path for c in off.predict_paths.values()} == {LIBRARY}
    assert "SERVING_FAST_PATH" in off.predict_paths["small"].reason
    per_model = load(booster, tmp_path, [-1], None, fast_path=False)
    assert {c.path for c in per_model.predict_paths.values()} == {LIBRARY}
    assert "config.yaml" in per_model.predict_paths["small"].reason


def _demo_versions() -> list[tuple[str, Path]]:
    found = []
    for config_path in sorted(DEMO_REPO.glob("*/config.yaml")):
        config = load_config(config_path)
        if config.platform == "xgboost":
            found += [
                (f"{config_path.parent.name}/{v.name}", v) for v in sorted(config_path.parent.glob("[0-9]*"))
            ]
    return found


@pytest.mark.parametrize(("name", "version_dir"), _demo_versions(), ids=[n for n, _ in _demo_versions()])
def test_every_demo_booster_answers_alike_on_the_fast_and_the_library_paths(
    tmp_path: Path, name: str, version_dir: Path
) -> None:
    """CI runs the library fallback for every demo model, and the fast paths, and compares."""
    config = load_config(version_dir.parent / "config.yaml")
    model_file = next(p for p in (version_dir / "model.ubj", version_dir / "model.json") if p.is_file())
    fast = XGBoostRuntime(model_file, config, Settings(fast_path_cache_dir=tmp_path))
    library = XGBoostRuntime(model_file, config, Settings(fast_path=False))
    assert fast.predict_paths["small"].path == TWIN, fast.predict_paths
    assert fast.predict_paths["large"].path == DIRECT, fast.predict_paths
    assert {c.path for c in library.predict_paths.values()} == {LIBRARY}
    n_features = config.inputs[0].shape[1]
    rows = probe_rows(n_features, seed=11)
    name_in, name_out = config.inputs[0].name, config.outputs[0].name
    for n in (1, 5, len(rows)):
        x = rows[:n]
        np.testing.assert_allclose(
            fast.predict({name_in: x})[name_out],
            library.predict({name_in: x})[name_out],
            rtol=0,
            atol=TOLERANCE,
        )
    fast.close()
    library.close()


def test_disagreement_names_what_differs() -> None:
    rows = np.arange(12, dtype=np.float32).reshape(6, 2)

    def ref(x: Any) -> Any:
        return x.sum(axis=1)

    assert disagreement(ref, ref, rows, 0.0) is None
    assert "shape" in (disagreement(lambda x: x, ref, rows, 1.0) or "")
    assert "NaN" in (
        disagreement(lambda x: np.where(x[:, 0] > 4, np.nan, x.sum(axis=1)), ref, rows, 1.0) or ""
    )
    assert "differs from the library by 0.5" in (disagreement(lambda x: ref(x) + 0.5, ref, rows, 0.1) or "")

    def batch_dependent(x: Any) -> Any:
        return ref(x) + (1.0 if len(x) == 1 else 0.0)

    assert "one row at a time, the fast path differs" in (disagreement(batch_dependent, ref, rows, 0.1) or "")

    def fails(x: Any) -> Any:
        raise ValueError("no")

    assert "failed on the probe rows: ValueError: no" in (disagreement(fails, ref, rows, 0.1) or "")

    def picky(x: Any) -> Any:  # a reference that refuses some rows: those are left out
        if (x > 9).any():
            raise ValueError("too big")
        return ref(x)

    assert disagreement(ref, picky, rows, 0.0) is None


def test_cache_is_reused_and_an_unwritable_cache_is_not_an_error(tmp_path: Path) -> None:
    source = tmp_path / "model.json"
    source.write_text("{}")
    calls: list[int] = []

    def build() -> bytes:
        calls.append(1)
        return b"graph"

    assert cached_build(source, "k1", build, tmp_path / "cache") == (b"graph", False)
    assert cached_build(source, "k1", build, tmp_path / "cache") == (b"graph", True)
    assert cached_build(source, "k2", build, tmp_path / "cache") == (b"graph", False), "another converter"
    assert len(calls) == 2
    assert not list((tmp_path / "cache").glob(".tmp-*")), "no temporary files left"
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    assert cached_build(source, "k1", build, blocker / "cache") == (b"graph", False)


def test_the_server_says_which_path_serves(demo_server: ServerProcess) -> None:
    meta = httpx.get(f"{demo_server.url}/v2/models/cancer-xgb", timeout=10).json()
    paths = meta["parameters"]["version_states"]["1"]["predict_path"]
    assert paths == {"small": {"path": TWIN}, "large": {"path": DIRECT}}
    onnx_meta = httpx.get(f"{demo_server.url}/v2/models/cancer-onnx", timeout=10).json()
    assert "predict_path" not in onnx_meta["parameters"]["version_states"]["1"]
    metrics = httpx.get(f"{demo_server.url}/metrics", timeout=10).text
    assert (
        'serving_predict_path{batches="small",model="cancer-xgb",path="onnx-twin",version="1"} 1.0' in metrics
    )
    assert 'serving_predict_path{batches="large",model="cancer-xgb",path="direct",version="1"} 1.0' in metrics
    assert (
        'serving_predict_path{batches="small",model="cancer-xgb",path="library",version="1"} 0.0' in metrics
    )


def test_a_cached_twin_does_not_import_the_converter(tmp_path: Path) -> None:
    """onnxmltools (and the onnx modules it brings) is imported to build a twin, never to load
    one from the cache, and XGBoost is imported without scikit-learn
    (serving/runtimes/nosklearn.py): a fresh process loading the same booster keeps both out of
    memory. A process with an empty cache still builds its twin."""
    import subprocess
    import sys

    booster = train_booster(n_features=N_FEATURES, rounds=10)
    runtime = load(booster, tmp_path, [-1])
    assert runtime.predict_paths["small"].path == TWIN
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from serving.modelconfig import ModelConfig\n"
        "from serving.runtimes.xgboost import XGBoostRuntime, TWIN\n"
        "from serving.settings import Settings\n"
        "root = Path(sys.argv[1])\n"
        "config = ModelConfig.model_validate_json(sys.argv[2])\n"
        "runtime = XGBoostRuntime(root / 'model.ubj', config, Settings(fast_path_cache_dir=root / 'cache'))\n"
        "assert runtime.predict_paths['small'].path == TWIN, runtime.predict_paths\n"
        "print('onnxmltools' in sys.modules, 'sklearn' in sys.modules)\n"
    )
    config = config_for(booster, [-1]).model_dump_json()

    def fresh_process() -> str:
        found = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path), config], capture_output=True, text=True, timeout=120
        )
        assert found.returncode == 0, found.stderr
        return found.stdout.strip()

    assert fresh_process() == "False False"
    for cached in (tmp_path / "cache").glob("*.onnx"):
        cached.unlink()
    assert fresh_process().startswith("True")  # built again, with the converter

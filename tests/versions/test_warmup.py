"""Warmup at load: from config samples or generated from the signature; a version whose
warmup fails is FAILED with the reason and never READY."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml

from serving.modelconfig import ModelConfig, load_config
from serving.repository.store import ModelRepository, VersionState
from serving.runtimes.base import load_runtime
from serving.runtimes.warmup import run_warmup, warmup_inputs
from serving.settings import Settings
from tests.server_process import DEMO_REPO
from tests.tinymodels import identity_onnx, spec, write_config
from tests.versions.conftest import iris_repo


def load(repo: Path) -> ModelRepository:
    executor = ThreadPoolExecutor(max_workers=1)
    repository = ModelRepository(Settings(model_repo=repo), executor)
    repository.load_all()
    executor.shutdown()
    return repository


def test_config_samples_warm_each_version_before_ready(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = iris_repo(
        tmp_path,
        warmup={
            "batch_sizes": [1, 16],
            "repeat": 3,
            "inputs": {"input": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]},
        },
    )
    with caplog.at_level(logging.INFO, logger="serving.repository.store"):
        repository = load(repo)
    for entry in repository.get("iris-xgb").versions.values():
        assert entry.state is VersionState.READY
        assert 0 < entry.warmup_seconds <= entry.load_seconds
    assert "model iris-xgb version 2 ready (xgboost, load" in caplog.text and "warmup" in caplog.text
    repository.close()


def test_warmup_inputs_tile_samples_and_generate_from_the_signature() -> None:
    iris = load_config(DEMO_REPO / "iris-xgb/config.yaml").model_copy(
        update={"warmup": load_config(DEMO_REPO / "iris-xgb/config.yaml").warmup.model_copy(
            update={"inputs": {"input": [[1, 2, 3, 4], [5, 6, 7, 8]]}})}
    )  # fmt: skip
    tiled = warmup_inputs(iris, 5)["input"]
    assert tiled.dtype == np.float32 and tiled.shape == (5, 4)
    assert tiled[:, 0].tolist() == [1, 5, 1, 5, 1]
    digits = load_config(DEMO_REPO / "digits-mlp/config.yaml")
    generated = warmup_inputs(digits, 3)["input"]
    assert generated.shape == (3, 64) and not generated.any()
    runtime = load_runtime(digits, DEMO_REPO / "digits-mlp/1", Settings())
    ran = run_warmup(runtime, digits.model_copy(update={"warmup": digits.warmup.model_copy(
        update={"batch_sizes": (1, 4), "repeat": 2})}))  # fmt: skip
    assert ran == 4
    assert run_warmup(runtime, digits.model_copy(update={"warmup": digits.warmup.model_copy(
        update={"enabled": False})})) == 0  # fmt: skip
    runtime.close()


@pytest.mark.parametrize(
    ("warmup", "needle"),
    [
        ({"inputs": {"input": [[1.0, 2.0, 3.0]]}}, "does not fit [-1, 4]"),
        ({"inputs": {"other": [[1.0, 2.0, 3.0, 4.0]]}}, "are not inputs of the model"),
        ({"inputs": {"input": [["a", "b", "c", "d"]]}}, "warmup failed"),
    ],
)
def test_failing_warmup_leaves_the_version_failed_with_the_reason(
    tmp_path: Path, warmup: dict[str, object], needle: str
) -> None:
    repository = load(iris_repo(tmp_path, warmup=warmup))
    for entry in repository.get("iris-xgb").versions.values():
        assert entry.state is VersionState.FAILED and entry.runtime is None
        assert "warmup failed" in entry.reason and needle in entry.reason
    rows = repository.index()
    assert {r["state"] for r in rows} == {"FAILED"} and all(needle in r["reason"] for r in rows)


def test_bad_warmup_config_is_a_config_error(tmp_path: Path) -> None:
    repo = iris_repo(tmp_path, warmup={"batch_sizes": [0]})
    repository = load(repo)
    model = repository.get("iris-xgb")
    assert "warmup.batch_sizes" in model.error and not model.versions
    doc = yaml.safe_load((repo / "iris-xgb/config.yaml").read_text())
    assert doc["warmup"] == {"batch_sizes": [0]}


def write_width_three_identity(root: Path, warmup: dict[str, object] | None = None) -> Path:
    """An ONNX identity over [-1, 3] whose config declares [-1, -1]: generated inputs are one
    column wide, which the graph refuses."""
    model_dir = root / "narrow"
    doc: dict[str, object] = {
        "platform": "onnx",
        "inputs": [spec("x", "FP32", [-1, -1])],
        "outputs": [spec("y", "FP32", [-1, -1])],
    }
    if warmup is not None:
        doc["warmup"] = warmup
    write_config(model_dir, doc)
    (model_dir / "1").mkdir()
    (model_dir / "1" / "model.onnx").write_bytes(identity_onnx("FP32", 3))
    return root


def test_generated_warmup_the_model_refuses_is_a_warning_and_the_version_serves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="serving.repository.store"):
        repository = load(write_width_three_identity(tmp_path))
    entry = repository.version("narrow", "1")
    assert entry.state is VersionState.READY and entry.runtime is not None
    assert "model narrow version 1: the model refused the warm-up inputs generated" in caplog.text
    assert "set warmup.inputs" in caplog.text
    assert entry.runtime.predict({"x": np.ones((2, 3), dtype=np.float32)})["y"].shape == (2, 3)
    repository.close()


def test_configured_warmup_the_model_refuses_still_fails_the_version(tmp_path: Path) -> None:
    repository = load(write_width_three_identity(tmp_path, {"inputs": {"x": [[1.0]]}}))
    entry = repository.version("narrow", "1")
    assert entry.state is VersionState.FAILED and entry.runtime is None
    assert "warmup failed" in entry.reason
    repository.close()


def test_generated_bytes_are_decimal_zeros() -> None:
    config = ModelConfig.model_validate(
        {
            "platform": "onnx",
            "inputs": [spec("s", "BYTES", [-1, 2])],
            "outputs": [spec("t", "BYTES", [-1, 2])],
        }
    )
    generated = warmup_inputs(config, 3)["s"]
    assert generated.dtype == object and generated.shape == (3, 2)
    assert {int(v) for v in generated.ravel()} == {0} and all(isinstance(v, bytes) for v in generated.ravel())

"""``serving export`` for LightGBM text models: the ONNX version matches ``Booster.predict``
(≤ 1e-5 on random and edge rows) and loads in the server; what cannot keep parity (categorical
splits, a failed check) is refused with one clear line and nothing written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serving.errors import ModelLoadError
from serving.modelconfig import load_config
from serving.repository.export import export_booster, is_lightgbm_model
from serving.repository.store import validate_repository
from serving.runtimes.base import load_runtime
from serving.runtimes.fastpath import probe_rows
from serving.settings import Settings
from tests.server_process import ROOT
from tests.tinymodels import train_booster, train_lgbm

X = np.random.default_rng(1).normal(size=(300, 6)).astype(np.float32)


def save(booster: Any, tmp_path: Path, name: str = "model.txt") -> Path:
    path = tmp_path / name
    booster.save_model(str(path))
    return path


@pytest.mark.parametrize(
    ("params", "outputs"),
    [
        ({"objective": "binary"}, {"label": [-1], "probabilities": [-1, 2]}),
        ({"objective": "multiclass", "num_class": 3}, {"label": [-1], "probabilities": [-1, 3]}),
        ({"objective": "regression"}, {"variable": [-1, 1]}),
    ],
    ids=["binary", "multiclass", "regression"],
)
def test_export_round_trips_with_parity(
    tmp_path: Path, params: dict[str, Any], outputs: dict[str, Any]
) -> None:
    booster = train_lgbm(n_features=6, rounds=20, missing=0.05, **params)
    report = export_booster(save(booster, tmp_path), tmp_path / "repo", "exported")
    assert report.ok and report.version == 1 and report.rows == 512 + len(probe_rows(6))
    assert report.max_abs_diff <= 1e-5 and report.describe().endswith("OK")
    config = load_config(tmp_path / "repo" / "exported" / "config.yaml")
    assert config.platform == "onnx" and "LightGBM" in config.description
    assert {s.name: list(s.shape) for s in config.outputs} == outputs
    assert validate_repository(tmp_path / "repo") == []

    runtime = load_runtime(config, tmp_path / "repo" / "exported" / "1", Settings())
    rows = np.concatenate([X, probe_rows(6).astype(np.float32)])
    got = runtime.predict({"input": rows})
    native = booster.predict(rows)
    if "probabilities" in got:
        probs = got["probabilities"]
        np.testing.assert_allclose(probs[:, 1] if native.ndim == 1 else probs, native, atol=1e-5)
    else:
        np.testing.assert_allclose(got["variable"][:, 0], native, rtol=1e-6, atol=1e-5)
    runtime.close()


def test_categorical_splits_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    booster = train_lgbm(n_features=6, rounds=20, categorical=(2,))
    with pytest.raises(
        ModelLoadError, match=r"splits on categorical features \[2\].*serve it with platform: lightgbm"
    ):
        export_booster(save(booster, tmp_path), tmp_path / "repo", "cat")
    assert not (tmp_path / "repo").exists()


def test_failed_parity_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    path = save(train_lgbm(n_features=6, rounds=10), tmp_path)
    report = export_booster(path, tmp_path / "repo", "m", tolerance=-1)
    assert not report.ok
    assert re.search(
        r"^not written: .* max difference \(relative above 1\) .* \(tolerance -1\) FAILED; "
        r"serve it with platform: lightgbm$",
        report.describe(),
    )
    assert not (tmp_path / "repo").exists()


def test_lightgbm_files_are_told_from_xgboost_files(tmp_path: Path) -> None:
    assert is_lightgbm_model(save(train_lgbm(n_features=3), tmp_path))
    assert not is_lightgbm_model(save(train_booster(n_features=3), tmp_path, "model.json"))
    assert not is_lightgbm_model(tmp_path / "missing.txt")


def test_export_cli_with_a_lightgbm_model(tmp_path: Path) -> None:
    booster = train_lgbm(n_features=6, rounds=15)
    path = save(booster, tmp_path)
    command = [sys.executable, "-m", "serving.cli", "export", str(path), "--repo", str(tmp_path / "repo")]
    ok = subprocess.run([*command, "--model", "cli"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().endswith("(tolerance 1e-05) OK")
    refused = subprocess.run(
        [*command, "--model", "cli", "--tolerance", "-1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert refused.returncode == 1 and refused.stderr == ""
    assert refused.stdout.startswith("not written: ") and len(refused.stdout.strip().splitlines()) == 1
    assert refused.stdout.strip().endswith("FAILED; serve it with platform: lightgbm")
    assert sorted(p.name for p in (tmp_path / "repo" / "cli").iterdir()) == ["1", "config.yaml"]

"""``serving export`` and ``export_booster``: booster -> ONNX model version with config and a
parity report; the written version loads in the server's ONNX runtime and predicts like the booster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import xgboost as xgb

from serving.errors import InvalidInput, ModelLoadError
from serving.modelconfig import load_config
from serving.repository.export import export_booster
from serving.repository.store import validate_repository
from serving.runtimes.base import load_runtime
from serving.runtimes.fastpath import probe_rows
from serving.settings import Settings
from tests.server_process import ROOT
from tests.tinymodels import train_booster

X = np.random.default_rng(1).normal(size=(300, 6)).astype(np.float32)


def save(booster: xgb.Booster, tmp_path: Path, name: str = "model.json") -> Path:
    path = tmp_path / name
    booster.save_model(str(path))
    return path


@pytest.mark.parametrize(
    ("params", "outputs"),
    [
        ({"objective": "binary:logistic"}, {"label": [-1], "probabilities": [-1, 2]}),
        ({"objective": "multi:softprob", "num_class": 4}, {"label": [-1], "probabilities": [-1, 4]}),
        ({"objective": "reg:squarederror"}, {"variable": [-1, 1]}),
    ],
    ids=["binary", "multiclass", "regression"],
)
def test_export_booster_round_trips_with_parity(
    tmp_path: Path, params: dict[str, Any], outputs: dict[str, Any]
) -> None:
    booster = train_booster(n_features=6, rounds=20, depth=4, **params)
    report = export_booster(save(booster, tmp_path), tmp_path / "repo", "exported")
    rows = 512 + len(probe_rows(6))  # random rows and the fast-path guard's edge rows
    assert report.ok and report.version == 1 and report.rows == rows
    assert report.max_abs_diff < 1e-5
    assert f"parity on {rows} rows: max abs difference" in report.describe() and report.describe().endswith(
        "OK"
    )
    config = load_config(tmp_path / "repo" / "exported" / "config.yaml")
    assert config.platform == "onnx"
    assert [(s.name, list(s.shape)) for s in config.inputs] == [("input", [-1, 6])]
    assert {s.name: list(s.shape) for s in config.outputs} == outputs
    assert validate_repository(tmp_path / "repo") == []

    # the written version runs in the server's ONNX runtime and agrees with the booster
    runtime = load_runtime(config, tmp_path / "repo" / "exported" / "1", Settings())
    got = runtime.predict({"input": X})
    native = booster.inplace_predict(X)
    if "probabilities" in got:
        probs = got["probabilities"]
        np.testing.assert_allclose(probs[:, 1] if native.ndim == 1 else probs, native, atol=1e-5)
        np.testing.assert_array_equal(got["label"], (native > 0.5) if native.ndim == 1 else native.argmax(1))
    else:
        np.testing.assert_allclose(got["variable"][:, 0], native, rtol=1e-5, atol=1e-5)
    runtime.close()


def test_export_adds_versions_and_keeps_files_reproducible(tmp_path: Path) -> None:
    path = save(train_booster(n_features=6), tmp_path)
    first = export_booster(path, tmp_path / "repo", "m")
    second = export_booster(path, tmp_path / "repo", "m")
    assert (first.version, second.version) == (1, 2)
    assert first.path.read_bytes() == second.path.read_bytes()
    pinned = export_booster(path, tmp_path / "repo", "m", version=7, sample=X[:10])
    assert pinned.path == tmp_path / "repo" / "m" / "7" / "model.onnx" and pinned.rows == 10


def test_export_refuses_a_model_with_another_signature(tmp_path: Path) -> None:
    export_booster(save(train_booster(n_features=6), tmp_path, "a.json"), tmp_path / "repo", "m")
    wider = save(train_booster(n_features=8), tmp_path, "b.json")
    with pytest.raises(ModelLoadError, match="exists with another platform or signature"):
        export_booster(wider, tmp_path / "repo", "m")


def test_export_rejects_unsafe_model_names(tmp_path: Path) -> None:
    path = save(train_booster(), tmp_path)
    with pytest.raises(InvalidInput, match="invalid model name"):
        export_booster(path, tmp_path / "repo", "../escape")
    assert not (tmp_path / "escape").exists()


def test_export_cli_reports_parity_and_exit_code(tmp_path: Path) -> None:
    booster = train_booster(n_features=6, rounds=30, depth=5)
    path = save(booster, tmp_path, "model.ubj")
    command = [
        sys.executable,
        "-m",
        "serving.cli",
        "export",
        str(path),
        "--model-repo",
        str(tmp_path / "repo"),
    ]
    ok = subprocess.run([*command, "--model", "cli"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert ok.returncode == 0, ok.stderr
    written = tmp_path / "repo" / "cli" / "1" / "model.onnx"
    assert ok.stdout.startswith(f"wrote {written} (version 1); parity on {512 + len(probe_rows(6))} rows: ")
    assert ok.stdout.strip().endswith("(tolerance 1e-05) OK")
    session = ort.InferenceSession(str(written), providers=["CPUExecutionProvider"])
    probabilities = session.run(["probabilities"], {"input": X})[0]
    assert np.abs(probabilities[:, 1] - booster.inplace_predict(X)).max() < 1e-5

    # a tolerance no real conversion meets: the report says FAILED and the command exits 1
    strict = subprocess.run(
        [*command, "--model", "cli", "--tolerance", "-1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert strict.returncode == 1
    assert "(version 2)" in strict.stdout and strict.stdout.strip().endswith("(tolerance -1) FAILED")


def test_failed_parity_leaves_the_repository_untouched(tmp_path: Path) -> None:
    path = save(train_booster(n_features=6), tmp_path)
    repo = tmp_path / "repo"
    failed = export_booster(path, repo, "new-model", tolerance=-1.0)  # no difference passes
    assert not failed.ok and not (repo / "new-model").exists()
    assert not repo.exists() or list(repo.iterdir()) == []  # no temporary folder left either
    export_booster(path, repo, "m")
    before = sorted(str(p.relative_to(repo)) for p in repo.rglob("*"))
    assert not export_booster(path, repo, "m", tolerance=-1.0).ok
    assert sorted(str(p.relative_to(repo)) for p in repo.rglob("*")) == before
    with pytest.raises(ModelLoadError, match="exists already"):
        export_booster(path, repo, "m", version=1)


def test_cli_export_whose_parity_fails_exits_1_and_writes_nothing(tmp_path: Path) -> None:
    path = save(train_booster(n_features=6), tmp_path)
    cmd = [sys.executable, "-m", "serving.cli", "export", str(path), "--model-repo", str(tmp_path / "repo")]
    done = subprocess.run(
        [*cmd, "--model", "m", "--tolerance", "-1"], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 1 and "FAILED" in done.stdout and "Traceback" not in done.stderr
    assert not (tmp_path / "repo" / "m").exists()


def _broken_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """A missing file, a text file and boosters cut short (an interrupted copy), each with the
    words its one line must hold."""
    booster = train_booster(n_features=6, rounds=5)
    ubj = save(booster, tmp_path, "full.ubj").read_bytes()
    text = (ROOT / "model_repo" / "cancer-lgbm" / "1" / "model.txt").read_text()
    files = {
        "missing": (tmp_path / "nope.ubj", "no such file"),
        "text": (tmp_path / "notes.txt", "not a model XGBoost or LightGBM can load"),
        "truncated-ubj": (tmp_path / "cut.ubj", "not a model XGBoost or LightGBM can load"),
        "truncated-lightgbm": (tmp_path / "cut.txt", "truncated LightGBM model"),
    }
    files["text"][0].write_text("hello, not a model\n")
    files["truncated-ubj"][0].write_bytes(ubj[: len(ubj) // 2])
    files["truncated-lightgbm"][0].write_text(text[: len(text) // 3])
    return files


@pytest.mark.parametrize("case", ["missing", "text", "truncated-ubj", "truncated-lightgbm"])
def test_export_of_a_file_that_is_no_booster_is_one_line_and_writes_nothing(
    tmp_path: Path, case: str
) -> None:
    path, words = _broken_files(tmp_path)[case]
    repo = tmp_path / "repo"
    done = subprocess.run(
        [sys.executable, "-m", "serving.cli", "export", str(path), "--model-repo", str(repo), "--model", "m"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    # one line, no traceback, no library backtrace (LightGBM's parser never saw the cut file)
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"serving: error: {path}: "), done.stderr
    assert words in done.stderr and done.stdout == ""
    assert not repo.exists()

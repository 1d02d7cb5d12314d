"""Export a native XGBoost booster to an ONNX model version, with a parity check.

Usable from Python (``export_booster``) and as ``serving export``. The ONNX model keeps
onnxmltools' output names: classifiers give ``label`` (INT64 [N]) and ``probabilities``
(FP32 [N, K]); regressors give ``variable`` (FP32 [N, 1]).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from serving.errors import ModelLoadError
from serving.modelconfig import ModelConfig, check_model_name, load_config
from serving.runtimes.onnx import ORT_TYPES

TARGET_OPSET = 15


@dataclass
class ExportReport:
    path: Path
    version: int
    max_abs_diff: float
    tolerance: float
    rows: int

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    def describe(self) -> str:
        verdict = "OK" if self.ok else "FAILED"
        return (
            f"wrote {self.path} (version {self.version}); parity on {self.rows} rows: "
            f"max abs difference {self.max_abs_diff:.3g} (tolerance {self.tolerance:g}) {verdict}"
        )


def _native_vs_onnx(native: Any, onnx_outputs: dict[str, Any]) -> float:
    native = np.asarray(native, dtype=np.float32)
    if "probabilities" in onnx_outputs:
        probs = onnx_outputs["probabilities"]
        compare = probs[:, 1] if native.ndim == 1 and probs.shape[1] == 2 else probs
    else:
        compare = next(iter(onnx_outputs.values())).reshape(native.shape)
    return float(np.abs(compare - native).max())


def export_booster(
    booster_path: Path,
    repo: Path,
    model: str,
    version: int | None = None,
    tolerance: float = 1e-5,
    sample: np.ndarray[Any, Any] | None = None,
) -> ExportReport:
    """Convert ``booster_path`` to ``repo/model/<version>/model.onnx`` and write config.yaml.

    Parity: the booster and onnxruntime predict the same sample (given, or 512 rows drawn
    deterministically); the report carries the largest absolute difference. The version is
    written only when the check passes, atomically (``_publish``); on a failed check the
    repository is untouched, the report says FAILED and the CLI exits 1.
    """
    import onnxruntime as ort
    import xgboost as xgb
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    check_model_name(model)
    booster = xgb.Booster(model_file=str(booster_path))
    n_features = booster.num_features()
    onnx_model = convert_xgboost(
        booster, initial_types=[("input", FloatTensorType([None, n_features]))], target_opset=TARGET_OPSET
    )
    onnx_model.graph.name = model  # onnxmltools names graphs with a random UUID: keep files reproducible
    serialized = onnx_model.SerializeToString()
    session = ort.InferenceSession(serialized, providers=["CPUExecutionProvider"])
    outputs = [
        {
            "name": o.name,
            "datatype": ORT_TYPES[o.type],
            "shape": [-1, *[d if isinstance(d, int) else -1 for d in o.shape[1:]]],
        }
        for o in session.get_outputs()
    ]
    config_doc: dict[str, Any] = {
        "platform": "onnx",
        "description": f"exported from {booster_path.name} ({_objective(booster)})",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, n_features]}],
        "outputs": outputs,
        "version_policy": {"all": True},
    }

    model_dir = repo / model
    config_path = model_dir / "config.yaml"
    if config_path.exists():
        existing = load_config(config_path)
        wanted = ModelConfig.model_validate(config_doc)
        if (
            existing.platform != "onnx"
            or existing.inputs != wanted.inputs
            or existing.outputs != wanted.outputs
        ):
            raise ModelLoadError(
                f"{config_path}: model '{model}' exists with another platform or signature; export to a new name"
            )
    if version is None:
        taken = (
            [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
            if model_dir.is_dir()
            else []
        )
        version = max(taken, default=0) + 1
    version_dir = model_dir / str(version)
    if version_dir.exists():
        raise ModelLoadError(f"{version_dir} exists already; export to a new version")

    if sample is None:
        sample = np.random.default_rng(0).normal(size=(512, n_features)).astype(np.float32)
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    onnx_out = dict(
        zip([o.name for o in session.get_outputs()], session.run(None, {"input": sample}), strict=True)
    )
    diff = _native_vs_onnx(booster.inplace_predict(sample), onnx_out)
    report = ExportReport(version_dir / "model.onnx", version, diff, tolerance, len(sample))
    if report.ok:
        _publish(repo, model_dir, version_dir, serialized, None if config_path.exists() else config_doc)
    return report


def _publish(
    repo: Path, model_dir: Path, version_dir: Path, onnx: bytes, config_doc: dict[str, Any] | None
) -> None:
    """Write the version (and, for a new model, its config.yaml) into a hidden temporary folder
    of the repository, then move it into place with one rename: a polling server never sees a
    half-written version, and a failure leaves nothing behind. Hidden folders (``.name``) are
    never read as models or versions."""
    repo.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=repo))
    try:
        if config_doc is not None:  # a new model: stage the whole model folder
            staged_version = staging / version_dir.name
            staged_version.mkdir()
            (staged_version / "model.onnx").write_bytes(onnx)
            (staging / "config.yaml").write_text(yaml.safe_dump(config_doc, sort_keys=False))
            os.rename(staging, model_dir)  # fails if the folder appeared meanwhile: nothing lost
        else:
            (staging / "model.onnx").write_bytes(onnx)
            os.rename(staging, version_dir)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ModelLoadError(f"could not write {version_dir}: {exc.strerror or exc}") from None
    os.chmod(version_dir, 0o755)  # mkdtemp makes it 0700
    if config_doc is not None:
        os.chmod(model_dir, 0o755)


def _objective(booster: Any) -> str:
    try:
        return str(json.loads(booster.save_config())["learner"]["objective"]["name"])
    except (KeyError, ValueError):
        return "unknown objective"

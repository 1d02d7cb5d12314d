"""Export a native XGBoost or LightGBM booster to an ONNX model version, with a parity check.

Usable from Python (``export_booster``) and as ``serving export``. The ONNX model keeps
onnxmltools' output names: classifiers give ``label`` (INT64 [N]) and ``probabilities``
(FP32 [N, K]); regressors give ``variable`` (FP32 [N, 1]).

The version keeps its source booster beside ``model.onnx`` (``booster.json``, ``booster.ubj`` or
``booster.txt``), so the ONNX version can explain its predictions (serving/runtimes/explain.py).

Nothing is written unless the conversion predicts what the library does (within the tolerance,
on random and edge rows: NaN, ±large, ±inf). A LightGBM booster (a ``Booster.save_model`` text
file) with categorical splits is refused outright: ONNX's tree ensemble compares floats where
LightGBM casts category codes to integers and sends unseen and negative codes right. See
docs/lightgbm.md.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from serving import platforms
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
    measure: str = "max abs difference"
    hint: str = ""
    """What to do instead when the check fails (shown after FAILED)."""

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    def describe(self) -> str:
        if self.ok:
            head, verdict = f"wrote {self.path} (version {self.version})", "OK"
        else:
            head, verdict = f"not written: {self.path} (version {self.version})", "FAILED"
            verdict += f"; {self.hint}" if self.hint else ""
        return (
            f"{head}; parity on {self.rows} rows: "
            f"{self.measure} {self.max_abs_diff:.3g} (tolerance {self.tolerance:g}) {verdict}"
        )


def _native_vs_onnx(native: Any, onnx_outputs: dict[str, Any], scaled: bool = False) -> float:
    """Largest absolute difference; ``scaled``: relative where the native value exceeds 1 in
    magnitude (a float32 model output cannot carry more than 7 digits of a float64 one)."""
    native = np.asarray(native, dtype=np.float64 if scaled else np.float32)
    if "probabilities" in onnx_outputs:
        probs = onnx_outputs["probabilities"]
        compare = probs[:, 1] if native.ndim == 1 and probs.shape[1] == 2 else probs
    else:
        compare = next(iter(onnx_outputs.values())).reshape(native.shape)
    diff = np.abs(compare - native)
    if scaled:
        diff = diff / np.maximum(1.0, np.abs(native))
    return float(diff.max())


@dataclass
class _Converted:
    """A booster converted to ONNX, with what the parity check needs from its library."""

    onnx_model: Any
    n_features: int
    description: str
    predict: Callable[[np.ndarray[Any, Any]], Any]
    """The library's public predict: the reference."""
    scaled: bool
    """Compare relative above 1 (LightGBM predicts in doubles; the ONNX graph in floats)."""
    hint: str = ""


def export_booster(
    booster_path: Path,
    repo: Path,
    model: str,
    version: int | None = None,
    tolerance: float = 1e-5,
    sample: np.ndarray[Any, Any] | None = None,
) -> ExportReport:
    """Convert ``booster_path`` (XGBoost JSON/UBJ or LightGBM text) to
    ``repo/model/<version>/model.onnx`` and write config.yaml.

    Refusals come first (a bad name, an existing version or signature, a booster the converter
    cannot reproduce: ModelLoadError), then parity: the booster's library and onnxruntime
    predict the same sample (given, or 512 random rows plus the fast-path guard's edge rows)
    and the report carries the largest difference. The version is written only when the check
    passes, atomically (``_publish``); on a failed check the repository is untouched, the report
    says FAILED and the CLI exits 1.
    """
    check_model_name(model)
    if not booster_path.is_file():
        what = "is a directory" if booster_path.is_dir() else "no such file"
        raise ModelLoadError(
            f"{booster_path}: {what}; give a booster file (model.json, model.ubj or model.txt)"
        )
    converted = (
        _convert_lightgbm(booster_path) if is_lightgbm_model(booster_path) else _convert_xgboost(booster_path)
    )
    serialized, session, config_doc = _onnx_version(converted.onnx_model, model, converted.n_features)
    config_doc["description"] = converted.description
    version_dir, version, _ = _plan_version(repo, model, config_doc, version)

    if sample is None:
        from serving.runtimes.fastpath import probe_rows

        random = np.random.default_rng(0).normal(size=(512, converted.n_features))
        sample = np.concatenate([random, probe_rows(converted.n_features)])
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    diff = _native_vs_onnx(converted.predict(sample), _run(session, sample), scaled=converted.scaled)
    report = ExportReport(
        version_dir / "model.onnx",
        version,
        diff,
        tolerance,
        len(sample),
        measure="max difference (relative above 1)" if converted.scaled else "max abs difference",
        hint=converted.hint,
    )
    if report.ok:
        keep = (source_booster_name(booster_path), booster_path.read_bytes())
        _write_version(repo, model, config_doc, serialized, version, keep)
    return report


def _convert_xgboost(booster_path: Path) -> _Converted:
    import xgboost as xgb
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    from serving.runtimes.xgboost import error_reason

    try:
        booster = xgb.Booster(model_file=str(booster_path))
        n_features = booster.num_features()
    except xgb.core.XGBoostError as exc:
        # one line, without the library's C++ backtrace: what a text file or a truncated
        # booster gets (not LightGBM text either, since is_lightgbm_model said no)
        raise ModelLoadError(
            f"{booster_path}: not a model XGBoost or LightGBM can load (XGBoost: {error_reason(exc)})"
        ) from None
    onnx_model = convert_xgboost(
        booster, initial_types=[("input", FloatTensorType([None, n_features]))], target_opset=TARGET_OPSET
    )
    description = f"exported from {booster_path.name} ({_objective(booster)})"
    return _Converted(onnx_model, n_features, description, booster.inplace_predict, scaled=False)


def reproducible_bytes(onnx_model: Any) -> bytes:
    """The model's bytes, the same in every process.

    The converters (skl2onnx, onnxmltools) list a model's operator sets in the order of a Python set
    of (domain, version) pairs, which follows the process's string-hash seed: one process in about 40
    wrote the digits MLP with ``ai.onnx.ml`` before ``""``. Sorted by domain, the bytes depend only on
    the model.
    """
    opsets = sorted(((o.domain, o.version) for o in onnx_model.opset_import), key=lambda pair: pair[0])
    del onnx_model.opset_import[:]
    for domain, version in opsets:
        onnx_model.opset_import.add(domain=domain, version=version)
    data: bytes = onnx_model.SerializeToString()
    return data


def _onnx_version(onnx_model: Any, model: str, n_features: int) -> tuple[bytes, Any, dict[str, Any]]:
    """The converted model's bytes, an onnxruntime session on them, and its config.yaml."""
    import onnxruntime as ort

    onnx_model.graph.name = model  # onnxmltools names graphs with a random UUID: keep files reproducible
    serialized = reproducible_bytes(onnx_model)
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
        "platform": platforms.ONNX.name,
        "description": "",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, n_features]}],
        "outputs": outputs,
        "version_policy": {"all": True},
    }
    return serialized, session, config_doc


def _run(session: Any, sample: np.ndarray[Any, Any]) -> dict[str, Any]:
    return dict(
        zip([o.name for o in session.get_outputs()], session.run(None, {"input": sample}), strict=True)
    )


def _plan_version(
    repo: Path, model: str, config_doc: dict[str, Any], version: int | None
) -> tuple[Path, int, bool]:
    """Where the version goes, without writing: its folder, its number (the next free one if not
    given) and whether the model is new (config.yaml to write). Refuses an existing model with
    another signature and an existing version folder."""
    model_dir = repo / model
    config_path = model_dir / "config.yaml"
    if config_path.exists():
        existing = load_config(config_path)
        wanted = ModelConfig.model_validate(config_doc)
        if (
            existing.platform != platforms.ONNX.name
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
    return version_dir, version, not config_path.exists()


def source_booster_name(booster_path: Path) -> str:
    """The name the source booster keeps in the exported version (``SOURCE_BOOSTER_FILES``)."""
    if is_lightgbm_model(booster_path):
        return "booster.txt"
    return "booster.ubj" if booster_path.suffix == ".ubj" else "booster.json"


def _write_version(
    repo: Path,
    model: str,
    config_doc: dict[str, Any],
    serialized: bytes,
    version: int | None,
    keep: tuple[str, bytes] | None = None,
) -> tuple[Path, int]:
    """Publish config.yaml (for a new model) and the version's model.onnx atomically, with
    ``keep`` (name, bytes): the source booster, so the ONNX version can explain; returns the
    file and the version number."""
    version_dir, version, new_model = _plan_version(repo, model, config_doc, version)
    _publish(repo, repo / model, version_dir, serialized, config_doc if new_model else None, keep)
    return version_dir / "model.onnx", version


def _publish(
    repo: Path,
    model_dir: Path,
    version_dir: Path,
    onnx: bytes,
    config_doc: dict[str, Any] | None,
    keep: tuple[str, bytes] | None = None,
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
            if keep is not None:
                (staged_version / keep[0]).write_bytes(keep[1])
            (staging / "config.yaml").write_text(yaml.safe_dump(config_doc, sort_keys=False))
            os.rename(staging, model_dir)  # fails if the folder appeared meanwhile: nothing lost
        else:
            (staging / "model.onnx").write_bytes(onnx)
            if keep is not None:
                (staging / keep[0]).write_bytes(keep[1])
            os.rename(staging, version_dir)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ModelLoadError(f"could not write {version_dir}: {exc.strerror or exc}") from None
    os.chmod(version_dir, 0o755)  # mkdtemp makes it 0700
    if config_doc is not None:
        os.chmod(model_dir, 0o755)


def is_lightgbm_model(path: Path) -> bool:
    """LightGBM's text format (``Booster.save_model``) starts with the line ``tree``."""
    try:
        with path.open("rb") as handle:
            return handle.readline().strip().lstrip(b"\xef\xbb\xbf") == b"tree"
    except OSError:
        return False


def _convert_lightgbm(booster_path: Path) -> _Converted:
    """LightGBM text models: refused (ModelLoadError) when they split on categories."""
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    from serving.runtimes.lightgbm import load_booster

    booster = load_booster(booster_path)  # ModelLoadError in one line for a broken or truncated file
    n_features = booster.num_feature()
    dump = booster.dump_model()
    categorical = sorted(
        {
            node["split_feature"]
            for tree in dump["tree_info"]
            for node in _lightgbm_nodes(tree["tree_structure"])
            if node.get("decision_type") == "=="
        }
    )
    if categorical:
        raise ModelLoadError(
            f"{booster_path}: not exported: the booster splits on categorical features {categorical}, "
            "which ONNX's tree ensemble cannot reproduce for every input (LightGBM casts category codes "
            "to integers and sends unseen and negative codes right); serve it with platform: lightgbm"
        )
    try:
        onnx_model = convert_lightgbm(
            booster,
            initial_types=[("input", FloatTensorType([None, n_features]))],
            target_opset=TARGET_OPSET,
            zipmap=False,
        )
    except Exception as exc:  # onnxmltools raises several types for what it cannot convert
        raise ModelLoadError(
            f"{booster_path}: not exported: onnxmltools cannot convert it ({dump.get('objective', '?')}): "
            f"{type(exc).__name__}: {str(exc)[:300]}"
        ) from None
    for output in onnx_model.graph.output:
        # onnxmltools declares the classifier's label output as [1]; it has one value per row
        dims = output.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value"):
            dims[0].dim_param = "N"
    return _Converted(
        onnx_model,
        n_features,
        f"exported from {booster_path.name} (LightGBM {dump.get('objective', '?')})",
        booster.predict,
        scaled=True,
        hint="serve it with platform: lightgbm",
    )


def _lightgbm_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(current[child] for child in ("left_child", "right_child") if child in current)


def _objective(booster: Any) -> str:
    try:
        return str(json.loads(booster.save_config())["learner"]["objective"]["name"])
    except (KeyError, ValueError):
        return "unknown objective"

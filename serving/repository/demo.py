"""Builds the demo model repository, deterministically, from data that ships with scikit-learn.

``serving demo-models [DIR]`` writes:

- ``cancer-xgb``: native XGBoost binary classifier (breast cancer, 30 features); output
  ``probability`` = P(benign) per row.
- ``cancer-onnx``: the same booster exported to ONNX (``label``, ``probabilities`` [N, 2]).
- ``cancer-lgbm``: native LightGBM binary classifier on the same data (``model.txt``);
  output ``probability`` = P(benign) per row.
- ``digits-mlp``: scikit-learn MLP on the 8x8 digits (64 features) via skl2onnx; outputs
  ``label`` and ``probabilities`` [N, 10].
- ``iris-xgb``: two versions of a multiclass booster (iris, 4 features; ``probabilities``
  [N, 3]), for canaries: version 1 small, version 2 larger.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from serving import platforms


def _write_config(model_dir: Path, doc: dict[str, Any]) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def _train_xgb(x: Any, y: Any, params: dict[str, Any], rounds: int) -> Any:
    import xgboost as xgb

    return xgb.train(
        {"nthread": 1, "seed": 0, **params},
        xgb.DMatrix(x.astype(np.float32), label=y),
        num_boost_round=rounds,
    )


def _train_lgbm(x: Any, y: Any, params: dict[str, Any], rounds: int) -> Any:
    import lightgbm as lgb

    # one thread, row-wise histograms and deterministic=True: the same model.txt on any machine
    fixed = {"num_threads": 1, "seed": 0, "deterministic": True, "force_row_wise": True, "verbose": -1}
    return lgb.train({**fixed, **params}, lgb.Dataset(x.astype(np.float32), label=y), num_boost_round=rounds)


def build_demo_repository(root: Path) -> Iterator[str]:
    from skl2onnx import to_onnx
    from sklearn.datasets import load_breast_cancer, load_digits, load_iris
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    from serving.repository.export import export_booster, reproducible_bytes

    root.mkdir(parents=True, exist_ok=True)

    x, y = load_breast_cancer(return_X_y=True)
    cancer = root / "cancer-xgb"
    shutil.rmtree(cancer, ignore_errors=True)
    booster = _train_xgb(x, y, {"objective": "binary:logistic", "max_depth": 4, "eta": 0.3}, 50)
    _write_config(
        cancer,
        {
            "platform": platforms.XGBOOST.name,
            "description": "Breast cancer (sklearn), binary:logistic; probability = P(benign)",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 30]}],
            "outputs": [{"name": "probability", "datatype": "FP32", "shape": [-1]}],
        },
    )
    (cancer / "1").mkdir()
    booster.save_model(str(cancer / "1" / "model.json"))
    yield f"{cancer}/1/model.json"

    shutil.rmtree(root / "cancer-onnx", ignore_errors=True)
    report = export_booster(
        cancer / "1" / "model.json", root, "cancer-onnx", version=1, sample=x.astype(np.float32)
    )
    if not report.ok:
        raise RuntimeError(report.describe())
    yield report.describe()

    lgbm = root / "cancer-lgbm"
    shutil.rmtree(lgbm, ignore_errors=True)
    booster = _train_lgbm(x, y, {"objective": "binary", "num_leaves": 15, "learning_rate": 0.1}, 50)
    _write_config(
        lgbm,
        {
            "platform": platforms.LIGHTGBM.name,
            "description": "Breast cancer (sklearn), LightGBM binary; probability = P(benign)",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 30]}],
            "outputs": [{"name": "probability", "datatype": "FP32", "shape": [-1]}],
        },
    )
    (lgbm / "1").mkdir()
    booster.save_model(str(lgbm / "1" / "model.txt"))
    yield f"{lgbm}/1/model.txt"

    x, y = load_digits(return_X_y=True)
    digits = root / "digits-mlp"
    shutil.rmtree(digits, ignore_errors=True)
    with warnings.catch_warnings():
        # 300 epochs fit the digits (99.9% training accuracy); sklearn still warns that Adam has not
        # fully converged. More epochs would change the committed model for no gain.
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = MLPClassifier(hidden_layer_sizes=(64,), max_iter=300, random_state=0).fit(x / 16.0, y)
    onnx_model = to_onnx(mlp, x[:1].astype(np.float32), options={id(mlp): {"zipmap": False}}, target_opset=15)
    onnx_model.graph.input[0].name = "input"
    for node in onnx_model.graph.node:
        node.input[:] = ["input" if name == "X" else name for name in node.input]
    _write_config(
        digits,
        {
            "platform": platforms.ONNX.name,
            "description": "8x8 digits (sklearn) MLP; pixel values scaled to [0, 1]",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}],
            "outputs": [
                {"name": "label", "datatype": "INT64", "shape": [-1]},
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
            ],
        },
    )
    (digits / "1").mkdir()
    (digits / "1" / "model.onnx").write_bytes(reproducible_bytes(onnx_model))
    yield f"{digits}/1/model.onnx"

    x, y = load_iris(return_X_y=True)
    iris = root / "iris-xgb"
    shutil.rmtree(iris, ignore_errors=True)
    _write_config(
        iris,
        {
            "platform": platforms.XGBOOST.name,
            "description": "Iris (sklearn), multi:softprob; two versions for canary demos",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
            "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}],
            "version_policy": {"all": True},
        },
    )
    for version, (depth, rounds) in {1: (2, 5), 2: (3, 20)}.items():
        booster = _train_xgb(
            x, y, {"objective": "multi:softprob", "num_class": 3, "max_depth": depth}, rounds
        )
        (iris / str(version)).mkdir()
        booster.save_model(str(iris / str(version) / "model.json"))
        yield f"{iris}/{version}/model.json"

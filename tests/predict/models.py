"""Tiny real models for the batching tests, built in a temp dir."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from serving.modelconfig import ModelConfig
from serving.runtimes.base import Runtime, load_runtime
from serving.settings import Settings

N_FEATURES = 4


def training_data(rows: int = 200) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, N_FEATURES)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1).astype(np.int64)
    return x, y


def xgb_config(batching: dict[str, object] | None = None) -> dict[str, object]:
    doc: dict[str, object] = {
        "platform": "xgboost",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, N_FEATURES]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}],
    }
    if batching is not None:
        doc["batching"] = batching
    return doc


def write_xgb_model(repo: Path, name: str = "tiny-xgb", batching: dict[str, object] | None = None) -> Path:
    """A 3-class booster (multi:softprob, output [N, 3]) as ``repo/name/1/model.json``."""
    import xgboost as xgb

    x, y = training_data()
    booster = xgb.train(
        {"objective": "multi:softprob", "num_class": 3, "max_depth": 3, "nthread": 1, "seed": 0},
        xgb.DMatrix(x, label=y),
        num_boost_round=10,
    )
    model_dir = repo / name
    (model_dir / "1").mkdir(parents=True)
    booster.save_model(str(model_dir / "1" / "model.json"))
    (model_dir / "config.yaml").write_text(yaml.safe_dump(xgb_config(batching)))
    return model_dir


def write_onnx_model(repo: Path, name: str = "tiny-onnx") -> Path:
    """A logistic regression via skl2onnx: outputs ``label`` [N] INT64 and ``probabilities`` [N, 3]."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    x, y = training_data()
    model = LogisticRegression(max_iter=200).fit(x, y)
    onx = to_onnx(model, x[:1], options={id(model): {"zipmap": False}}, target_opset=17)
    model_dir = repo / name
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.onnx").write_bytes(onx.SerializeToString())
    doc = {
        "platform": "onnx",
        "inputs": [{"name": "X", "datatype": "FP32", "shape": [-1, N_FEATURES]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
        ],
    }
    (model_dir / "config.yaml").write_text(yaml.safe_dump(doc))
    return model_dir


def load(model_dir: Path) -> tuple[Runtime, ModelConfig]:
    config = ModelConfig.model_validate(yaml.safe_load((model_dir / "config.yaml").read_text()))
    return load_runtime(config, model_dir / "1", Settings()), config

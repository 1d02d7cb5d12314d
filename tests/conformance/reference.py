"""The demo models, sample inputs and in-process reference predictions (xgboost, lightgbm,
onnxruntime)."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import onnxruntime as ort
import xgboost as xgb

from tests.server_process import DEMO_REPO

# (model, version, features, outputs in config order)
MODELS = [
    ("cancer-xgb", "1", 30, ["probability"]),
    ("cancer-lgbm", "1", 30, ["probability"]),
    ("cancer-onnx", "1", 30, ["label", "probabilities"]),
    ("digits-mlp", "1", 64, ["label", "probabilities"]),
    ("iris-xgb", "1", 4, ["probabilities"]),
    ("iris-xgb", "2", 4, ["probabilities"]),
]
IDS = [f"{m}-v{v}" for m, v, _, _ in MODELS]


def sample(features: int, rows: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed + features).random((rows, features), dtype=np.float32)


def reference(model: str, version: str, x: np.ndarray) -> dict[str, np.ndarray]:
    path = DEMO_REPO / model / version
    if (path / "model.onnx").exists():
        session = ort.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, {"input": x}), strict=True))
    (name,) = next(o for m, v, _, o in MODELS if (m, v) == (model, version))
    if (path / "model.txt").exists():  # LightGBM predicts in float64; the demo config says FP32
        return {
            name: np.asarray(lgb.Booster(model_file=str(path / "model.txt")).predict(x), dtype=np.float32)
        }
    booster = xgb.Booster(model_file=str(path / "model.json"))
    return {name: booster.inplace_predict(x)}

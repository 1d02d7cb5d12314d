"""Tiny real models written into ``tmp_path`` for tests: ONNX graphs and XGBoost boosters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb
import yaml
from onnx import TensorProto, helper

ONNX_TYPES = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}


def write_config(model_dir: Path, doc: dict[str, Any]) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / "config.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def spec(name: str, datatype: str, shape: list[int]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape}


def identity_onnx(datatype: str, width: int = 3, in_name: str = "x", out_name: str = "y") -> bytes:
    """An ONNX graph ``y = Identity(x)`` over a [-1, width] tensor of ``datatype``."""
    onnx_type = ONNX_TYPES[datatype]
    graph = helper.make_graph(
        [helper.make_node("Identity", [in_name], [out_name])],
        "identity",
        [helper.make_tensor_value_info(in_name, onnx_type, [None, width])],
        [helper.make_tensor_value_info(out_name, onnx_type, [None, width])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def write_identity_model(root: Path, name: str, datatype: str, width: int = 3) -> Path:
    model_dir = root / name
    write_config(
        model_dir,
        {
            "platform": "onnx",
            "inputs": [spec("x", datatype, [-1, width])],
            "outputs": [spec("y", datatype, [-1, width])],
        },
    )
    (model_dir / "1").mkdir(exist_ok=True)
    (model_dir / "1" / "model.onnx").write_bytes(identity_onnx(datatype, width))
    return model_dir


def train_booster(
    n_features: int = 4,
    objective: str = "binary:logistic",
    rounds: int = 5,
    depth: int = 3,
    rows: int = 200,
    seed: int = 0,
    **params: Any,
) -> xgb.Booster:
    """A small booster on synthetic data (binary, multiclass with num_class, or regression)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, n_features)).astype(np.float32)
    score = x[:, 0] + 0.5 * x[:, 1 % n_features]
    if objective.startswith("binary"):
        y = (score > 0).astype(np.float32)
    elif objective.startswith("multi"):
        k = int(params.get("num_class", 3))
        y = np.digitize(score, np.quantile(score, np.linspace(0, 1, k + 1)[1:-1])).astype(np.float32)
    else:
        y = score
    return xgb.train(
        {"objective": objective, "max_depth": depth, "nthread": 1, "seed": 0, **params},
        xgb.DMatrix(x, label=y),
        num_boost_round=rounds,
    )


def write_xgb_model(
    root: Path,
    name: str,
    booster: xgb.Booster,
    output_shape: list[int] | None = None,
    version: int = 1,
    filename: str = "model.json",
) -> Path:
    model_dir = root / name
    n_features = booster.num_features()
    write_config(
        model_dir,
        {
            "platform": "xgboost",
            "inputs": [spec("input", "FP32", [-1, n_features])],
            "outputs": [spec("output", "FP32", output_shape or [-1])],
            "version_policy": {"all": True},
        },
    )
    (model_dir / str(version)).mkdir(parents=True, exist_ok=True)
    booster.save_model(str(model_dir / str(version) / filename))
    return model_dir


def write_fixed_reshape_model(root: Path, name: str) -> Path:
    """Loads and answers one row, but onnxruntime fails at run time for more (a runtime fault):
    ``y = Reshape(x, [1, 3])`` declared as [-1, 3]."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "target"], ["y"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        initializer=[helper.make_tensor("target", TensorProto.INT64, [2], [1, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    model_dir = root / name
    write_config(
        model_dir,
        {"platform": "onnx", "inputs": [spec("x", "FP32", [-1, 3])], "outputs": [spec("y", "FP32", [-1, 3])]},
    )
    (model_dir / "1").mkdir(exist_ok=True)
    (model_dir / "1" / "model.onnx").write_bytes(model.SerializeToString())
    return model_dir


def train_lgbm(
    n_features: int = 4,
    objective: str = "binary",
    rounds: int = 10,
    rows: int = 400,
    seed: int = 0,
    categorical: tuple[int, ...] = (),
    missing: float = 0.0,
    **params: Any,
) -> Any:
    """A small LightGBM booster on synthetic data (binary, multiclass with num_class, regression).
    ``categorical`` columns hold integer codes 0..9 that matter to the label; ``missing`` is the
    share of training values set to NaN."""
    import lightgbm as lgb

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, n_features))
    score = x[:, 0] + 0.5 * x[:, 1 % n_features]
    for column in categorical:
        codes = rng.integers(0, 10, size=rows)
        x[:, column] = codes
        score = score + np.where(codes % 3 == 0, 1.5, -0.5)
    if missing:
        x[rng.random(x.shape) < missing] = np.nan
    if objective.startswith("binary"):
        y = (score > np.median(score)).astype(np.float64)
    elif objective.startswith("multi"):
        k = int(params.get("num_class", 3))
        y = np.digitize(score, np.quantile(score, np.linspace(0, 1, k + 1)[1:-1])).astype(np.float64)
    else:
        y = score * 100.0  # values well above 1: float32 rounding would show
    fixed = {"num_threads": 1, "seed": seed, "deterministic": True, "verbose": -1, "min_data_in_leaf": 5}
    data = lgb.Dataset(x, label=y, categorical_feature=list(categorical) or "auto", free_raw_data=False)
    return lgb.train({**fixed, "objective": objective, **params}, data, num_boost_round=rounds)


def write_lgbm_model(
    root: Path,
    name: str,
    booster: Any,
    output_shape: list[int] | None = None,
    version: int = 1,
    filename: str = "model.txt",
    **config: Any,
) -> Path:
    model_dir = root / name
    write_config(
        model_dir,
        {
            "platform": "lightgbm",
            "inputs": [spec("input", "FP32", [-1, booster.num_feature()])],
            "outputs": [spec("output", "FP64", output_shape or [-1])],
            "version_policy": {"all": True},
            **config,
        },
    )
    (model_dir / str(version)).mkdir(parents=True, exist_ok=True)
    booster.save_model(str(model_dir / str(version) / filename))
    return model_dir

"""Feature tables for the demo models, from the data that ships with scikit-learn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# (model, version) of every demo model version in model_repo/
DEMO_VERSIONS = [
    ("cancer-xgb", "1"),
    ("cancer-onnx", "1"),
    ("digits-mlp", "1"),
    ("iris-xgb", "1"),
    ("iris-xgb", "2"),
]


def features(model: str, rows: int | None = None) -> np.ndarray[Any, Any]:
    """The dataset the model was trained on (float32, as a client would send it), plus a few
    rows of extremes so values outside the training range are compared too."""
    from sklearn.datasets import load_breast_cancer, load_digits, load_iris

    if model.startswith("cancer"):
        x = load_breast_cancer().data
    elif model.startswith("digits"):
        x = load_digits().data / 16.0
    else:
        x = load_iris().data
    rng = np.random.default_rng(3)
    extremes = rng.normal(scale=50.0, size=(7, x.shape[1]))
    x = np.concatenate([x, extremes, np.zeros((1, x.shape[1]))]).astype(np.float32)
    return x if rows is None else x[:rows]


def list_table(x: np.ndarray[Any, Any], column: str = "features") -> pa.Table:
    """``id`` plus one fixed-size list column holding each row's features."""
    values = pa.array(x.reshape(-1), pa.float32())
    return pa.table({"id": pa.array(np.arange(len(x), dtype=np.int64)),
                     column: pa.FixedSizeListArray.from_arrays(values, x.shape[1])})  # fmt: skip


def named_table(x: np.ndarray[Any, Any], dtype: Any = np.float64) -> pa.Table:
    """``id`` plus one column per feature, ``f0`` … (float64, as most tables store them)."""
    columns: dict[str, Any] = {"id": np.arange(len(x), dtype=np.int64)}
    columns.update({f"f{j}": x[:, j].astype(dtype) for j in range(x.shape[1])})
    return pa.table(columns)


def feature_names(x: np.ndarray[Any, Any]) -> list[str]:
    return [f"f{j}" for j in range(x.shape[1])]


def write(table: pa.Table, path: Path, row_group_size: int = 100) -> Path:
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def column_array(table: pa.Table, name: str) -> np.ndarray[Any, Any]:
    """A scalar or list output column as a numpy array ([N] or [N, K])."""
    column = table.column(name).combine_chunks()
    if pa.types.is_list(column.type):
        width = len(column[0]) if len(column) else 0
        return np.asarray(column.flatten().to_numpy(zero_copy_only=False)).reshape(len(column), width)
    return np.asarray(column.to_numpy(zero_copy_only=False))

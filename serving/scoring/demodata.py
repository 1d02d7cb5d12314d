"""``serving demo-data``: a sample table for ``serving batch`` and ``serving profile``, made from
scikit-learn's bundled breast-cancer data (the data the demo models cancer-xgb, cancer-onnx and
cancer-lgbm are trained on), so the batch page runs as written in a fresh clone."""

from __future__ import annotations

from pathlib import Path

FEATURES = 30
"""The cancer models' input width: columns ``f0`` … ``f29``."""


def write_demo_table(output: Path, rows: int | None = None, overwrite: bool = False) -> int:
    """Write ``id`` (int64) and ``f0`` … ``f29`` (float64), one row per sample (all 569, or the
    first ``rows`` repeated as needed: a bigger table for a benchmark), atomically; returns
    the number of rows. An existing file is replaced only with ``overwrite``."""
    import numpy as np
    import pyarrow as pa
    from sklearn.datasets import load_breast_cancer

    from serving.scoring.local import atomic_parquet

    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; pass --overwrite to replace it")
    x = load_breast_cancer().data
    count = len(x) if rows is None else rows
    x = x[np.arange(count) % len(x)]
    columns = {"id": pa.array(np.arange(count, dtype=np.int64))}
    columns |= {f"f{j}": pa.array(np.ascontiguousarray(x[:, j])) for j in range(FEATURES)}
    table = pa.table(columns)
    with atomic_parquet(output, table.schema) as writer:
        writer.write_table(table)
    return count

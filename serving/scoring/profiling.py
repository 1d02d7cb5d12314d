"""``serving profile``: the training reference profile of a model version, from a table.

The table is read as ``serving batch`` reads it (the same column mapping and checks: a
``ScoringPlan``); the version's runtime predicts every row, so the profile describes the
outputs as well as the features. Feature names: the ``--columns`` given, else the booster's
own names, else ``f0..fN``. The profile is written atomically beside the model file
(``<model>/<version>/profile.json``); a server picks it up when it next loads the version.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from serving.observability.profile import (
    DEFAULT_BINS,
    PROFILE_FILE,
    ProfileError,
    build_profile,
    write_profile,
)
from serving.runtimes.base import Runtime, feature_names
from serving.scoring.local import open_dataset, runtime_settings
from serving.scoring.model import BatchError, open_runtime, resolve_version
from serving.scoring.plan import build_plan


def profile_version(
    repo: Path,
    model: str,
    data: str,
    *,
    version: str | None = None,
    columns: Sequence[str] | None = None,
    input_column: str | None = None,
    bins: int = DEFAULT_BINS,
    overwrite: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """Write ``profile.json`` for the version; returns its path and the document. Raises
    BatchError with one clear line."""
    ref = resolve_version(repo, model, version)
    target = ref.path / PROFILE_FILE
    if target.exists() and not overwrite:
        raise BatchError(f"{target} exists; pass --overwrite to replace it")
    spec = ref.config.inputs[0]
    if len(ref.config.inputs) != 1 or len(spec.shape) != 2:
        raise BatchError("profiles describe models with one [-1, n_features] input")
    dataset = open_dataset(data)
    plan = build_plan(ref, dataset.schema, columns=columns, input_column=input_column, keep=[], nan="allow")
    try:
        table = dataset.to_table(columns=plan.read_columns)
    except pa.ArrowException as exc:
        raise BatchError(f"cannot read {data}: {str(exc).splitlines()[0]}") from None
    batch = table.combine_chunks().to_batches()[0] if table.num_rows else None
    if batch is None:
        raise BatchError(f"{data} has no rows")
    matrices, bad = plan.matrices(batch)
    if bad.any():
        raise BatchError(f"{int(bad.sum())} rows of {data} are null or of the wrong length")
    runtime = open_runtime(ref, runtime_settings("runtime", 1))
    try:
        outputs = plan.predict(runtime, matrices)
        names = list(columns) if columns is not None else _names(runtime, spec.shape[1])
    finally:
        runtime.close()
    try:
        doc = build_profile(
            np.asarray(matrices[0], dtype=np.float64), names, outputs, spec.name, bins, Path(data).name
        )
    except ProfileError as exc:
        raise BatchError(str(exc)) from None
    write_profile(doc, target)
    return target, doc


def _names(runtime: Runtime, width: int) -> list[str]:
    names = feature_names(runtime)
    return names if names is not None and len(names) == width else [f"f{i}" for i in range(width)]

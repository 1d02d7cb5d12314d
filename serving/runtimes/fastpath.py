"""Guarded fast paths: a faster way to compute a runtime's outputs serves only after it has
agreed with the library's own public predict on probe rows at load.

A native booster's library predict pays a fixed cost per call that dwarfs its trees for one
row (XGBoost 3.2 walks every tree for its depth and builds a ``std::regex`` on every call).
Runtimes may therefore answer through something faster: the same trees compiled into an
ONNX graph run by onnxruntime (the *twin*, :func:`onnx_twin`), or the library's C entry
point called with prepared arguments. Neither is trusted: :func:`disagreement` compares
the candidate with the library on the warm-up rows plus random and edge rows (NaN, ±large,
±inf, all-missing), and the runtime serves through the library, with a warning and the
reason in its metadata and metrics, when they differ by more than the tolerance or the
candidate fails.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serving.inference import Array

log = logging.getLogger("serving.runtimes.fastpath")

LIBRARY = "library"
"""The library's public predict: the reference, always available."""


@dataclass(frozen=True)
class PathChoice:
    """Which computation serves a range of batch sizes, and why a faster one does not."""

    path: str
    reason: str = ""


def probe_rows(n_features: int, extra: Array | None = None, seed: int = 0) -> Array:
    """Rows that exercise a tree ensemble's branches and its missing-value and categorical
    rules: random rows at several scales, small non-negative integers (category codes), the
    edge rows that trip converters and C entry points (all NaN, some NaN, ±1e30, ±inf,
    float32's max, tiny values, negative, unseen and past-int32 category codes), and
    ``extra`` (the configured warm-up rows). Float32, the dtype online requests mostly have;
    callers cast for a signature that declares another."""
    rng = np.random.default_rng(seed)
    parts = [
        rng.normal(size=(48, n_features)),
        rng.normal(scale=100.0, size=(16, n_features)),
        rng.uniform(-1e4, 1e4, size=(8, n_features)),
        rng.integers(0, 32, size=(16, n_features)).astype(np.float64),
    ]
    edge = np.zeros((13, n_features))
    edge[0] = np.nan  # all missing
    edge[1, ::2] = np.nan  # every other feature missing
    edge[2] = 1e30
    edge[3] = -1e30
    edge[4] = np.inf
    edge[5] = -np.inf
    edge[6] = 1e-30
    edge[7] = rng.normal(size=n_features)
    edge[7, rng.integers(n_features)] = np.nan  # one missing value in an ordinary row
    edge[8] = np.float32(np.finfo(np.float32).max)
    edge[9] = -1.0  # a negative category code is "missing" for a categorical split
    edge[10] = 1_000_000.0  # a category code no training row had
    edge[11] = 2.0**31  # past int32: LightGBM's categorical cast
    parts.append(edge)
    sparse = rng.normal(size=(8, n_features))
    sparse[rng.random(sparse.shape) < 0.5] = np.nan
    parts.append(sparse)
    if extra is not None and extra.ndim == 2 and extra.shape[1] == n_features and extra.size:
        parts.append(np.asarray(extra, dtype=np.float64))
    return np.ascontiguousarray(np.concatenate(parts).astype(np.float32))


def disagreement(
    candidate: Callable[[Array], Array],
    reference: Callable[[Array], Array],
    rows: Array,
    tolerance: float,
    batch: int = 7,
) -> str | None:
    """None when ``candidate`` gives the reference's outputs within ``tolerance`` on every row,
    asked three ways: all rows in one call, each row alone (as online calls do), and in
    batches of ``batch`` rows (a size that is neither); otherwise the first difference, in a
    few words. Rows the reference itself refuses are left out (no contract to keep for them)."""
    try:
        expected = np.asarray(reference(rows), dtype=np.float64)
    except Exception:
        keep = [i for i in range(len(rows)) if _answers(reference, rows[i : i + 1])]
        rows = rows[keep]
        expected = np.asarray(reference(rows), dtype=np.float64)
    try:
        asked = (
            ("in one batch", [candidate(rows)]),
            ("one row at a time", [candidate(rows[i : i + 1]) for i in range(len(rows))]),
            (f"in batches of {batch}", [candidate(rows[i : i + batch]) for i in range(0, len(rows), batch)]),
        )
    except Exception as exc:  # any failure of the fast path means: do not use it
        return f"the fast path failed on the probe rows: {type(exc).__name__}: {str(exc)[:200]}"
    for label, parts in asked:
        shapes = {np.shape(part)[1:] for part in parts}
        if len(shapes) != 1 or sum(len(part) for part in parts) != len(expected):
            return f"{label}, the fast path's output shape differs from the library's {list(expected.shape)}"
        got = np.concatenate([np.asarray(part, dtype=np.float64) for part in parts])
        if got.shape != expected.shape:
            return f"{label}, the fast path's output shape {list(got.shape)} differs from the library's {list(expected.shape)}"
        if not np.array_equal(np.isnan(got), np.isnan(expected)):
            return f"{label}, the fast path and the library disagree on which outputs are NaN"
        # equal infinities agree (inf - inf is NaN, not 0)
        with np.errstate(invalid="ignore"):
            diff = np.where(np.isnan(expected) | (got == expected), 0.0, np.abs(got - expected))
        worst = float(diff.max()) if diff.size else 0.0
        if not worst <= tolerance:
            row = int(np.unravel_index(int(np.argmax(diff)), diff.shape)[0])
            return (
                f"{label}, the fast path differs from the library by {worst:.3g} "
                f"(probe row {row}; tolerance {tolerance:g})"
            )
    return None


def _answers(fn: Callable[[Array], Array], rows: Array) -> bool:
    try:
        fn(rows)
    except Exception:
        return False
    return True


def cache_dir(configured: Path | None) -> Path:
    """Where built twins are kept: the setting, else a folder in the temp dir (never the model
    repository, which is read-only in a pod: /mnt/models)."""
    return configured if configured is not None else Path(tempfile.gettempdir()) / "serving-fastpath"


def cached_build(
    source: Path, kind: str, build: Callable[[], bytes], directory: Path | None
) -> tuple[bytes, bool]:
    """``build()``'s bytes for ``source``, cached in ``directory`` under a key of the source's
    content and ``kind`` (which names the converter and its version); the second value says
    whether the cache answered. A cache that cannot be written is skipped, never an error;
    files are written to a temporary name and renamed, so a concurrent reader (another
    worker) never sees half a file."""
    digest = hashlib.sha256(source.read_bytes() + b"\0" + kind.encode()).hexdigest()[:32]
    target = cache_dir(directory) / f"{digest}.onnx"
    try:
        return target.read_bytes(), True
    except OSError:
        pass
    data = build()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".onnx")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    except OSError as exc:
        log.warning("fast-path cache %s not written: %s", target.parent, exc)
    return data, False


def onnx_session(serialized: bytes) -> Any:
    """A one-thread onnxruntime session for small batches (threads cost more than one row)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(serialized, options, providers=["CPUExecutionProvider"])


def twin_reader(session: Any, library_output: Array) -> Callable[[Array], Array]:
    """A function rows -> outputs in the library's layout, from a converted tree ensemble's
    session: onnxmltools' classifiers give ``probabilities`` [N, K] (a binary booster's output
    is column 1), regressors ``variable`` [N, 1]. Only that output is asked for: a
    classifier's ``label`` output would cost an ArgMax and a copy per call for nothing."""
    names = [o.name for o in session.get_outputs()]
    input_name = session.get_inputs()[0].name
    if "probabilities" in names:
        wanted = ["probabilities"]
        if library_output.ndim == 1:

            def binary(x: Array) -> Array:
                probs: Array = session.run(wanted, {input_name: _f32(x)})[0]
                return np.ascontiguousarray(probs[:, 1])

            return binary

        def multiclass(x: Array) -> Array:
            probs: Array = session.run(wanted, {input_name: _f32(x)})[0]
            return probs

        return multiclass
    first = [names[0]]

    def regression(x: Array) -> Array:
        values: Array = session.run(first, {input_name: _f32(x)})[0]
        return values.reshape(len(x), *library_output.shape[1:])

    return regression


def _f32(x: Array) -> Array:
    # The converted trees compare float32 features, as XGBoost's DMatrix does; for a library
    # that compares doubles the guard decides whether narrowing changes an answer.
    return x if x.dtype == np.float32 else np.ascontiguousarray(x, dtype=np.float32)

"""Native XGBoost runtime.

Where ``Booster.inplace_predict``'s time goes for one row of a 200-tree, depth-6 booster
(perf, XGBoost 3.2): OpenMP with all cores (the default) costs more than the trees below a
few hundred rows; the Python wrapper builds ctypes objects and JSON per call and sniffs
for pandas/arrow/cudf; in C, the proxy DMatrix built per call re-reads the cgroup CPU quota
(five file system calls), a std::regex is constructed, and the predictor
walks every node of every tree to find each tree's depth (``WalkTreeMixIn::MaxDepth``, for
its array layout; no predictor or booster parameter avoids that or the regex in XGBoost
3.2: ``predictor`` is no longer a parameter). So we call the same C
entry point, ``XGBoosterPredictFromDense``, with arguments prepared once at load, a proxy
DMatrix and out-parameters kept per thread (see ``_CallState``), one thread for small
batches and ``xgboost_large_batch_nthread`` for large ones. Figures: docs/guides/performance.md,
"Native XGBoost predict"; measured by ``loadtests/native_predict.py``.

Small batches go faster still through an ONNX *twin*: the same trees converted by
onnxmltools at load and run by onnxruntime (about 7 µs for one row against XGBoost's 50+),
below ``fast_path_max_rows``. Both the twin and the direct C call are guarded
(serving/runtimes/fastpath.py): each serves only after it has matched
``Booster.inplace_predict`` on the probe rows within ``fast_path_tolerance``; otherwise that
range of batch sizes is served by ``inplace_predict`` itself, with a warning, and the reason
is in the version's metadata (``predict_path``) and the ``serving_predict_path`` metric.

Outputs: ``binary:logistic`` gives P(class 1) per row, shape [N]; ``multi:softprob`` gives
a [N, K] matrix of class probabilities; regression gives the prediction, shape [N].
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import re
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from serving.errors import ModelLoadError
from serving.inference import Array
from serving.modelconfig import ModelConfig
from serving.runtimes import fastpath
from serving.runtimes.base import Explanation, check_feature_count, signature_mismatch
from serving.runtimes.explain import xgboost_explain, xgboost_names
from serving.runtimes.fastpath import LIBRARY, PathChoice
from serving.runtimes.nosklearn import hidden_sklearn
from serving.runtimes.warmup import warmup_inputs
from serving.settings import Settings

with hidden_sklearn():  # XGBoost would import scikit-learn: 140 MB we never use (nosklearn.py)
    import xgboost as xgb

log = logging.getLogger("serving.runtimes.xgboost")

try:  # private but stable since XGBoost 1.4 (bounded in pyproject.toml); guarded at load
    from xgboost.core import _LIB, _check_call, c_bst_ulong  # type: ignore[attr-defined]

    _DIRECT = all(hasattr(_LIB, name) for name in ("XGBoosterPredictFromDense", "XGProxyDMatrixCreate"))
except ImportError:
    _DIRECT = False

DIRECT = "direct"
"""XGBoost's C entry point with prepared arguments (see _CallState)."""
TWIN = "onnx-twin"
"""The booster's trees converted to ONNX and run by onnxruntime."""

_XGB_PREFIX = re.compile(r"^\[[0-9:]+\] [^ ]+:[0-9]+: ")
_TYPESTR = {np.dtype(np.float32): "<f4", np.dtype(np.float64): "<f8"}


class _CallState:
    """What one thread reuses across predict calls.

    ``proxy``: XGBoost builds a proxy DMatrix per call when none is given, and its Context
    re-reads the cgroup CPU quota (three stats, two open/read/close per call; strace). Passing
    our own proxy skips that: ~38 µs instead of ~62 µs for the C call on one row of a
    200-tree booster. A proxy holds the last input's array interface, so each thread has its
    own. The out-parameters are allocated once so a call creates no ctypes
    objects (fewer allocations, fewer GC passes)."""

    def __init__(self) -> None:
        self.proxy = ctypes.c_void_p()
        _check_call(_LIB.XGProxyDMatrixCreate(ctypes.byref(self.proxy)))
        self.shape = ctypes.POINTER(c_bst_ulong)()
        self.dims = c_bst_ulong()
        self.preds = ctypes.POINTER(ctypes.c_float)()
        self.shape_ref = ctypes.byref(self.shape)
        self.dims_ref = ctypes.byref(self.dims)
        self.preds_ref = ctypes.byref(self.preds)

    def free(self) -> None:
        if self.proxy:
            _check_call(_LIB.XGDMatrixFree(self.proxy))
            self.proxy = ctypes.c_void_p()


def error_reason(exc: Exception) -> str:
    """The first line of an XGBoost error without its "[hh:mm:ss] /build/path/file.cc:123: "
    prefix (and without the C++ backtrace below it)."""
    return _XGB_PREFIX.sub("", str(exc).splitlines()[0])


@dataclass(eq=False)
class _Guarded:
    """One file's guard verdicts and twin, shared by the runtimes of identical files."""

    paths: dict[str, PathChoice]
    twin: Callable[[Array], Array] | None
    twin_rows: int
    direct_ok: bool


_GUARDED: weakref.WeakValueDictionary[tuple[object, ...], _Guarded] = weakref.WeakValueDictionary()
"""Verdicts by file content and settings, while a runtime holds them (see ``_choose_paths``)."""


class XGBoostRuntime:
    def __init__(self, path: Path, config: ModelConfig, settings: Settings) -> None:
        try:
            booster = xgb.Booster(model_file=str(path))
            n_features = booster.num_features()
        except xgb.core.XGBoostError as exc:
            reason = error_reason(exc)
            raise ModelLoadError(
                f"{path}: XGBoost cannot load it: {reason}", "not a valid XGBoost model", path
            ) from None
        check_feature_count(path, n_features, config)
        booster.set_param({"nthread": settings.xgboost_nthread})
        self._small = booster
        self._large = booster.copy()
        self._large.set_param({"nthread": settings.xgboost_large_batch_nthread})
        self._large_rows = settings.large_batch_rows
        self._input = config.inputs[0].name
        self._output = config.outputs[0].name
        self._out_dtype = np.dtype(np.float32)
        self._n_features = n_features
        self._args = json.dumps(
            {
                "type": 0,
                "training": False,
                "iteration_begin": 0,
                "iteration_end": 0,
                "missing": float("nan"),
                "strict_shape": False,
                "cache_id": 0,
            }
        ).encode()
        self._local = threading.local()
        self._explain_lock = threading.Lock()
        self.feature_names = xgboost_names(booster)
        self._states: list[_CallState] = []
        self._states_lock = threading.Lock()
        output_rank = len(config.outputs[0].shape)
        probe = self._library(np.zeros((1, n_features), dtype=np.float32))
        if probe.ndim != output_rank:
            mismatch = (
                f"the booster's output has shape {list(probe.shape)} per row batch, "
                f"but config.yaml declares output rank {output_rank} ({list(config.outputs[0].shape)})"
            )
            raise signature_mismatch(path, mismatch)
        self._twin: Callable[[Array], Array] | None = None
        self._shared: _Guarded | None = None
        self._twin_rows = 0
        self._direct_ok = False
        self.predict_paths = self._choose_paths(path, config, settings)

    # -- the paths ------------------------------------------------------------------------
    def _booster(self, rows: int) -> xgb.Booster:
        return self._small if rows < self._large_rows else self._large

    def _library(self, x: Array) -> Array:
        """The public API: the reference every faster path is checked against."""
        return np.asarray(
            self._booster(x.shape[0]).inplace_predict(x, validate_features=False), dtype=np.float32
        )

    def _choose_paths(self, path: Path, config: ModelConfig, settings: Settings) -> dict[str, PathChoice]:
        """Check each fast path against the library on the probe rows; keep those that agree.
        Returns the path serving small batches (below ``fast_path_max_rows``) and large ones."""
        if not (settings.fast_path and config.fast_path):
            off = (
                "fast paths are turned off ("
                + ("config.yaml" if settings.fast_path else "SERVING_FAST_PATH")
                + ")"
            )
            return {"small": PathChoice(LIBRARY, off), "large": PathChoice(LIBRARY, off)}
        try:
            extra = warmup_inputs(config, 1)[self._input] if config.warmup.inputs else None
        except ValueError:
            extra = None
        rows = fastpath.probe_rows(self._n_features, extra)
        tolerance = settings.fast_path_tolerance
        # Versions whose files are identical (a repository of copies, a canary of the same
        # booster) get the same verdicts and share one twin: the guard and the twin's session
        # are most of a version's load time. Keyed by everything the verdict depends on; the
        # cache directory is in the key so that separately configured runtimes never share.
        key = (
            hashlib.sha256(path.read_bytes()).hexdigest(),
            self._n_features,
            tolerance,
            settings.fast_path_max_rows,
            settings.large_batch_rows,
            str(settings.fast_path_cache_dir),
            None if extra is None else np.ascontiguousarray(extra).tobytes(),
        )
        shared = _GUARDED.get(key)
        if shared is not None:
            self._shared = shared
            self._twin, self._twin_rows, self._direct_ok = shared.twin, shared.twin_rows, shared.direct_ok
            return dict(shared.paths)
        paths = self._guard(path, rows, tolerance, settings)
        self._shared = _Guarded(paths, self._twin, self._twin_rows, self._direct_ok)
        _GUARDED[key] = self._shared
        return paths

    def _guard(self, path: Path, rows: Array, tolerance: float, settings: Settings) -> dict[str, PathChoice]:

        large = PathChoice(LIBRARY, "XGBoost's C entry points are missing")
        if _DIRECT:
            problem = fastpath.disagreement(self._direct, self._library, rows, tolerance)
            if problem is None:
                self._direct_ok = True
                large = PathChoice(DIRECT)
            else:
                large = PathChoice(LIBRARY, f"direct C call: {problem}")
                log.warning("%s: XGBoost's direct C call is not used: %s", path, problem)
        else:
            log.warning("%s: %s; serving through inplace_predict", path, large.reason)

        small = large
        if settings.fast_path_max_rows > 1:
            twin, problem = self._build_twin(path, rows, settings)
            if twin is not None:
                self._twin = twin
                self._twin_rows = settings.fast_path_max_rows
                small = PathChoice(TWIN)
            else:
                small = PathChoice(large.path, f"{TWIN}: {problem}")
                log.warning("%s: no ONNX twin for small batches: %s", path, problem)
        return {"small": small, "large": large}

    def _build_twin(
        self, path: Path, rows: Array, settings: Settings
    ) -> tuple[Callable[[Array], Array] | None, str]:
        try:
            converter = metadata.version("onnxmltools")
        except metadata.PackageNotFoundError:
            return None, "onnxmltools is not installed"
        n_features = self._n_features

        def build() -> bytes:
            # Imported only to build: a twin from the cache never loads the converter (nor the
            # onnx and protobuf modules it brings), which a server's memory would keep for good.
            from onnxmltools import convert_xgboost
            from onnxmltools.convert.common.data_types import FloatTensorType

            model = convert_xgboost(
                self._small, initial_types=[("input", FloatTensorType([None, n_features]))], target_opset=15
            )
            model.graph.name = "twin"
            data: bytes = model.SerializeToString()
            return data

        kind = f"xgboost-twin onnxmltools-{converter} xgboost-{xgb.__version__} opset-15"
        try:
            serialized, _ = fastpath.cached_build(path, kind, build, settings.fast_path_cache_dir)
            twin = fastpath.twin_reader(fastpath.onnx_session(serialized), self._library(rows[:1]))
        except Exception as exc:  # the converter refuses some objectives and features
            return None, f"conversion failed: {type(exc).__name__}: {str(exc)[:200]}"
        problem = fastpath.disagreement(twin, self._library, rows, settings.fast_path_tolerance)
        if problem is not None:
            return None, problem
        return twin, ""

    def _thread_state(self) -> _CallState:
        state: _CallState | None = getattr(self._local, "state", None)
        if state is None:
            state = _CallState()
            with self._states_lock:
                self._states.append(state)
            self._local.state = state
        return state

    def _direct(self, x: Array) -> Array:
        typestr = _TYPESTR.get(x.dtype)
        if typestr is None:
            return self._library(x)
        booster = self._booster(x.shape[0])
        x = np.ascontiguousarray(x)
        interface = (
            f'{{"data":[{x.ctypes.data},true],"shape":[{x.shape[0]},{x.shape[1]}],'
            f'"typestr":"{typestr}","version":3}}'
        ).encode()
        state = self._thread_state()
        _check_call(
            _LIB.XGBoosterPredictFromDense(
                booster.handle,
                interface,
                self._args,
                state.proxy,
                state.shape_ref,
                state.dims_ref,
                state.preds_ref,
            )
        )
        dims = state.dims.value
        shape = state.shape
        if dims == 1:
            out_shape: tuple[int, ...] = (int(shape[0]),)
        else:
            out_shape = tuple(int(shape[i]) for i in range(dims))
        count = 1
        for d in out_shape:
            count *= d
        # The buffer belongs to XGBoost (thread-local, reused by the next call): copy it out.
        result: Array = np.empty(out_shape, dtype=np.float32)
        ctypes.memmove(result.ctypes.data, state.preds, count * 4)
        if result.ndim == 2 and result.shape[1] == 1:
            result = result[:, 0]
        return result

    def _run(self, x: Array) -> Array:
        rows = x.shape[0]
        if rows < self._twin_rows and self._twin is not None:
            return self._twin(x)
        if self._direct_ok:
            return self._direct(x)
        return self._library(x)

    def predict(self, inputs: dict[str, Array]) -> dict[str, Array]:
        return {self._output: self._run(inputs[self._input])}

    def explain(self, x: Array) -> Explanation:
        """Exact contributions (``pred_contribs``) on the single-thread booster, serialised."""
        with self._explain_lock:
            return xgboost_explain(self._small, x)

    def close(self) -> None:
        with self._states_lock:
            for state in self._states:
                state.free()
            self._states.clear()
        self._twin = None
        self._shared = None
        del self._small, self._large

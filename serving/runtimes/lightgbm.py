"""Native LightGBM runtime, with a guarded single-row fast path.

Loading: ``model.txt`` (or ``model.bst``, KServe lgbserver's name) in LightGBM's text format,
as ``Booster.save_model`` writes it, through LightGBM's own loader; never pickle.

Outputs (the booster's objective decides, ``raw_score: true`` in config.yaml skips its
transform): one value per row, shape [N], when the booster has one model per iteration
(binary: P(class 1); regression: the prediction; ranking: the score), else [N, K] (multiclass:
class probabilities). The config's input and output shapes are checked against the booster.

Speed: ``Booster.predict`` costs far more per call than the trees for a few rows (pandas,
arrow and scipy sniffing, a new ``_InnerPredictor`` and parameter string per call, OpenMP
set-up). LightGBM's C API has an entry point made for online serving,
``LGBM_BoosterPredictForMatSingleRowFast``, whose configuration (``...FastInit``) is
prepared once. Batches below ``lightgbm_fast_path_max_rows`` rows go through it, one call per
row, with one prepared configuration per predict thread (LightGBM serialises calls on one).
Larger batches go through ``Booster.predict`` with one thread, and with
``lightgbm_large_batch_nthread`` from ``large_batch_rows`` rows on. Figures: docs/lightgbm.md.

The fast path reaches LightGBM's loaded library through private names of its Python
package (``lightgbm.basic._LIB``, ``Booster._handle``), so it is bounded in pyproject.toml
and guarded: at load it must give ``Booster.predict``'s outputs on the warm-up rows plus
random and edge rows (NaN, ±large, ±inf, unseen categories), one by one and in small batches,
within ``fast_path_tolerance``. When it disagrees, a symbol is missing, or its set-up fails,
the version serves through ``Booster.predict`` with a warning; ``predict_paths`` says which
path serves and why (metadata and the ``serving_predict_path`` metric).
"""

from __future__ import annotations

import ctypes
import logging
import threading
from pathlib import Path

import lightgbm as lgb
import numpy as np

from serving.datatypes import TO_NUMPY
from serving.errors import ModelLoadError
from serving.inference import Array
from serving.modelconfig import ModelConfig
from serving.runtimes.base import Explanation, check_feature_count, signature_mismatch
from serving.runtimes.explain import lightgbm_explain, lightgbm_names
from serving.runtimes.fastpath import LIBRARY, PathChoice, disagreement, probe_rows
from serving.runtimes.warmup import warmup_inputs
from serving.settings import Settings

log = logging.getLogger("serving.runtimes.lightgbm")

FAST = "lightgbm-single-row"
"""LightGBM's C single-row entry point with a prepared configuration (``_FastConfig``)."""

# LightGBM's c_api.h constants (stable since 2.x)
_PREDICT_NORMAL = 0
_PREDICT_RAW_SCORE = 1
_DTYPES = {np.dtype(np.float32): 0, np.dtype(np.float64): 1}  # C_API_DTYPE_FLOAT32 / FLOAT64
_SYMBOLS = (
    "LGBM_BoosterPredictForMatSingleRowFastInit",
    "LGBM_BoosterPredictForMatSingleRowFast",
    "LGBM_FastConfigFree",
    "LGBM_GetLastError",
)


class _Lib:
    """Our own ctypes view of the library LightGBM's Python package loaded (the same
    ``dlopen`` handle), so setting ``argtypes`` never touches the package's function objects."""

    def __init__(self) -> None:
        from lightgbm import basic

        loaded = getattr(basic, "_LIB", None)
        name = getattr(loaded, "_name", None)
        if loaded is None or name is None:
            raise RuntimeError("lightgbm.basic._LIB (the package's loaded library) is not there")
        lib = ctypes.CDLL(name)
        missing = [symbol for symbol in _SYMBOLS if not hasattr(lib, symbol)]
        if missing:
            raise RuntimeError(f"the LightGBM library has no {', '.join(missing)}")
        self.init = lib.LGBM_BoosterPredictForMatSingleRowFastInit
        self.init.argtypes = [
            ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
            ctypes.c_int32, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p),
        ]  # fmt: skip
        self.init.restype = ctypes.c_int
        self.predict = lib.LGBM_BoosterPredictForMatSingleRowFast
        # all pointers passed as integers: the cheapest conversion ctypes has
        self.predict.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        self.predict.restype = ctypes.c_int
        self.free = lib.LGBM_FastConfigFree
        self.free.argtypes = [ctypes.c_void_p]
        self.free.restype = ctypes.c_int
        self.last_error = lib.LGBM_GetLastError
        self.last_error.restype = ctypes.c_char_p

    def error(self) -> str:
        message: bytes | None = self.last_error()
        return message.decode(errors="replace") if message else "unknown LightGBM error"


_lib: _Lib | None = None
_lib_problem = ""
_lib_lock = threading.Lock()


def _library() -> _Lib | None:
    """The fast path's library view, built once; None (and the reason) when it cannot be."""
    global _lib, _lib_problem
    with _lib_lock:
        if _lib is None and not _lib_problem:
            try:
                _lib = _Lib()
            except (RuntimeError, OSError, AttributeError, ImportError) as exc:
                _lib_problem = str(exc)
        return _lib


class _FastConfig:
    """One thread's prepared single-row configuration and output length slot.

    LightGBM locks a FastConfig for each call (its predictor has per-call buffers), so each
    predict thread gets its own rather than queueing on one."""

    def __init__(self, lib: _Lib, handle: int, predict_type: int, dtype: int, n_features: int) -> None:
        self.lib = lib
        self.config = ctypes.c_void_p()
        if lib.init(
            handle, predict_type, 0, -1, dtype, n_features, b"num_threads=1", ctypes.byref(self.config)
        ):
            raise RuntimeError(f"LGBM_BoosterPredictForMatSingleRowFastInit failed: {lib.error()}")
        self.out_len = ctypes.c_int64()
        self.out_len_addr = ctypes.addressof(self.out_len)

    def free(self) -> None:
        if self.config:
            self.lib.free(self.config)
            self.config = ctypes.c_void_p()


def load_booster(path: Path) -> lgb.Booster:
    """The booster in ``path`` (Booster.save_model text), or ModelLoadError in one line: LightGBM's
    own parser is shown only complete text models (a truncated one aborts the process in it)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ModelLoadError(
            f"{path}: not a LightGBM text model (not UTF-8 text)", "not a valid LightGBM model", path
        ) from None
    if text.lstrip("\ufeff").split("\n", 1)[0].strip() != "tree":
        # Booster.save_model's text starts with the line "tree": refuse anything else (a pickle,
        # a JSON dump) before LightGBM's parser sees it
        raise ModelLoadError(
            f"{path}: not a LightGBM text model (Booster.save_model output starts with 'tree')",
            "not a valid LightGBM model",
            path,
        )
    if "\nend of trees\n" not in text:
        # LightGBM parses the trees in parallel by the sizes in the header; a file cut short
        # (an interrupted copy) makes it terminate the whole process instead of raising
        raise ModelLoadError(
            f"{path}: truncated LightGBM model (no 'end of trees' line after the trees)",
            "not a valid LightGBM model",
            path,
        )
    try:
        return lgb.Booster(model_str=text)
    except lgb.basic.LightGBMError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "unknown error"
        raise ModelLoadError(
            f"{path}: LightGBM cannot load it: {reason}", "not a valid LightGBM model", path
        ) from None


class LightGBMRuntime:
    """A LightGBM booster behind the Runtime protocol; ``predict_paths`` tells which computation
    serves small (below ``lightgbm_fast_path_max_rows``) and large batches, and why."""

    def __init__(self, path: Path, config: ModelConfig, settings: Settings) -> None:
        booster = load_booster(path)
        n_features = booster.num_feature()
        check_feature_count(path, n_features, config)
        per_row = booster.num_model_per_iteration()
        expected_shape = [-1] if per_row == 1 else [-1, per_row]
        declared_out = list(config.outputs[0].shape)
        if declared_out != expected_shape:
            mismatch = (
                f"the booster gives {per_row} value{'s' if per_row > 1 else ''} per row "
                f"(output shape {expected_shape}) but config.yaml declares output shape {declared_out}"
            )
            raise signature_mismatch(path, mismatch)
        self._booster = booster
        self._explain_lock = threading.Lock()
        self.feature_names = lightgbm_names(booster)
        self._n_features = n_features
        self._per_row = per_row
        self._raw = config.raw_score
        self._input = config.inputs[0].name
        self._output = config.outputs[0].name
        self._in_dtype = TO_NUMPY[config.inputs[0].datatype]
        self._out_dtype = TO_NUMPY[config.outputs[0].datatype]
        self._small_threads = settings.lightgbm_nthread
        self._large_threads = settings.lightgbm_large_batch_nthread
        self._large_rows = settings.large_batch_rows
        self._fast_rows = 0
        self._lib: _Lib | None = None
        self._local = threading.local()
        self._configs: list[_FastConfig] = []
        self._configs_lock = threading.Lock()
        self.predict_paths = self._choose_paths(path, config, settings)

    # -- the paths ------------------------------------------------------------------------
    def _library_predict(self, x: Array) -> Array:
        """``Booster.predict``: the public API, and the reference the fast path must match."""
        threads = self._small_threads if x.shape[0] < self._large_rows else self._large_threads
        result = self._booster.predict(x, raw_score=self._raw, num_threads=threads, validate_features=False)
        return np.asarray(result, dtype=np.float64)

    def _thread_config(self) -> _FastConfig:
        config: _FastConfig | None = getattr(self._local, "config", None)
        if config is None:
            assert self._lib is not None
            config = _FastConfig(
                self._lib,
                self._handle,
                _PREDICT_RAW_SCORE if self._raw else _PREDICT_NORMAL,
                _DTYPES[self._in_dtype],
                self._n_features,
            )
            with self._configs_lock:
                self._configs.append(config)
            self._local.config = config
        return config

    def _fast_predict(self, x: Array) -> Array:
        """One single-row C call per row, each writing straight into its row of the result."""
        x = np.ascontiguousarray(x, dtype=self._in_dtype)
        rows = x.shape[0]
        out = np.empty((rows, self._per_row), dtype=np.float64)
        state = self._thread_config()
        call, handle, out_len = state.lib.predict, state.config, state.out_len_addr
        row_bytes, out_bytes = x.strides[0], out.strides[0]
        x_addr, out_addr = x.ctypes.data, out.ctypes.data
        for i in range(rows):
            if call(handle, x_addr + i * row_bytes, out_len, out_addr + i * out_bytes):
                raise RuntimeError(f"LGBM_BoosterPredictForMatSingleRowFast failed: {state.lib.error()}")
        return out[:, 0] if self._per_row == 1 else out

    def _choose_paths(self, path: Path, config: ModelConfig, settings: Settings) -> dict[str, PathChoice]:
        """Turn the fast path on for small batches only if it matches ``Booster.predict``."""
        library = PathChoice(LIBRARY)
        if not settings.fast_path or not config.fast_path:
            where = "SERVING_FAST_PATH" if not settings.fast_path else "config.yaml"
            return {"small": PathChoice(LIBRARY, f"the fast path is turned off ({where})"), "large": library}
        if settings.lightgbm_fast_path_max_rows < 1:
            off = "the fast path is turned off (lightgbm_fast_path_max_rows is 0)"
            return {"small": PathChoice(LIBRARY, off), "large": library}
        problem = self._try_fast_path(config, settings.fast_path_tolerance)
        if problem is not None:
            log.warning("%s: LightGBM's single-row fast path is not used: %s", path, problem)
            self._release_configs()
            return {"small": PathChoice(LIBRARY, problem), "large": library}
        self._fast_rows = settings.lightgbm_fast_path_max_rows
        return {"small": PathChoice(FAST), "large": library}

    def _try_fast_path(self, config: ModelConfig, tolerance: float) -> str | None:
        self._lib = _library()
        if self._lib is None:
            return f"LightGBM's C entry points are not reachable: {_lib_problem}"
        handle = getattr(self._booster, "_handle", None)
        if not isinstance(handle, ctypes.c_void_p) or not handle.value:
            return "Booster._handle (the booster's C handle) is not there"
        self._handle: int = handle.value
        try:
            extra = warmup_inputs(config, 1)[self._input] if config.warmup.inputs else None
        except ValueError:  # the warm-up itself reports a bad sample
            extra = None
        rows = np.ascontiguousarray(probe_rows(self._n_features, extra).astype(self._in_dtype))
        try:
            return disagreement(self._fast_predict, self._library_predict, rows, tolerance)
        except RuntimeError as exc:
            return str(exc)

    def _release_configs(self) -> None:
        with self._configs_lock:
            for state in self._configs:
                state.free()
            self._configs.clear()
        self._local = threading.local()

    # -- Runtime ----------------------------------------------------------------------------
    def predict(self, inputs: dict[str, Array]) -> dict[str, Array]:
        x = inputs[self._input]
        result = self._fast_predict(x) if x.shape[0] < self._fast_rows else self._library_predict(x)
        return {self._output: result.astype(self._out_dtype, copy=False)}

    def explain(self, x: Array) -> Explanation:
        """Exact contributions (``pred_contrib``), serialised."""
        with self._explain_lock:
            return lightgbm_explain(self._booster, x)

    def close(self) -> None:
        self._fast_rows = 0
        self._release_configs()  # before the booster: each configuration points into it
        del self._booster

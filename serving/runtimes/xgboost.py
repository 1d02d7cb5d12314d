"""Native XGBoost runtime.

``Booster.inplace_predict`` costs ~200 µs for one row of a 200-tree model, of which about
half is Python (a ctypes class built per call, which also triggers the GC, JSON config
encoding, type sniffing for pandas/arrow/cudf) and half is the C call. We call the same
C entry point, ``XGBoosterPredictFromDense``, with the arguments prepared once at load,
and use one thread for small batches (OpenMP start-up costs more than it saves below a
few hundred rows) and all cores for large ones. Measured by ``loadtests/native_predict.py``.

Outputs: ``binary:logistic`` gives P(class 1) per row, shape [N]; ``multi:softprob`` gives
a [N, K] matrix of class probabilities; regression gives the prediction, shape [N].
"""

from __future__ import annotations

import ctypes
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from serving.errors import ModelLoadError
from serving.modelconfig import ModelConfig
from serving.settings import Settings
from serving.types import Array

try:  # private but stable since XGBoost 1.4; fall back to the public API if it moves
    from xgboost.core import _LIB, _check_call, c_bst_ulong  # type: ignore[attr-defined]

    _DIRECT = True
except ImportError:  # pragma: no cover - depends on the installed XGBoost
    _DIRECT = False

_XGB_PREFIX = re.compile(r"^\[[0-9:]+\] [^ ]+:[0-9]+: ")
_TYPESTR = {np.dtype(np.float32): "<f4", np.dtype(np.float64): "<f8"}


class XGBoostRuntime:
    def __init__(self, path: Path, config: ModelConfig, settings: Settings) -> None:
        try:
            booster = xgb.Booster(model_file=str(path))
            n_features = booster.num_features()
        except xgb.core.XGBoostError as exc:
            # XGBoost prefixes its messages with "[hh:mm:ss] /build/path/file.cc:123: "
            reason = _XGB_PREFIX.sub("", str(exc).splitlines()[0])
            raise ModelLoadError(f"{path}: XGBoost cannot load it: {reason}") from None
        declared = config.inputs[0].shape[1]
        if n_features != declared:
            raise ModelLoadError(
                f"{path}: the booster takes {n_features} features but config.yaml declares {declared}"
            )
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
        output_rank = len(config.outputs[0].shape)
        probe = self._run(np.zeros((1, n_features), dtype=np.float32))
        if probe.ndim != output_rank:
            raise ModelLoadError(
                f"{path}: the booster's output has shape {list(probe.shape)} per row batch, "
                f"but config.yaml declares output rank {output_rank} ({list(config.outputs[0].shape)})"
            )

    def _run(self, x: Array) -> Array:
        booster = self._small if x.shape[0] < self._large_rows else self._large
        typestr = _TYPESTR.get(x.dtype)
        if not _DIRECT or typestr is None:
            return np.asarray(booster.inplace_predict(x, validate_features=False), dtype=np.float32)
        x = np.ascontiguousarray(x)
        interface = (
            f'{{"data":[{x.ctypes.data},true],"shape":[{x.shape[0]},{x.shape[1]}],'
            f'"typestr":"{typestr}","version":3}}'
        ).encode()
        shape = ctypes.POINTER(c_bst_ulong)()
        dims = c_bst_ulong()
        preds = ctypes.POINTER(ctypes.c_float)()
        _check_call(
            _LIB.XGBoosterPredictFromDense(
                booster.handle,
                interface,
                self._args,
                None,
                ctypes.byref(shape),
                ctypes.byref(dims),
                ctypes.byref(preds),
            )
        )
        out_shape = tuple(int(shape[i]) for i in range(dims.value))
        count = 1
        for d in out_shape:
            count *= d
        # The buffer belongs to XGBoost (thread-local, reused by the next call): copy it out.
        flat: Any = np.ctypeslib.as_array(preds, shape=(count,)).copy()
        result: Array = flat.reshape(out_shape)
        if result.ndim == 2 and result.shape[1] == 1:
            result = result[:, 0]
        return result

    def predict(self, inputs: dict[str, Array]) -> dict[str, Array]:
        return {self._output: self._run(inputs[self._input])}

    def close(self) -> None:
        del self._small, self._large

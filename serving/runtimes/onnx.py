"""onnxruntime runtime: one InferenceSession per version, signature checked against config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from serving.errors import InvalidInput, ModelLoadError
from serving.modelconfig import ModelConfig, TensorSpec
from serving.settings import Settings
from serving.types import Array

# onnxruntime's type strings -> OIP datatypes
ORT_TYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


def _check_signature(
    kind: str, declared: tuple[TensorSpec, ...], actual: list[ort.NodeArg], path: Path
) -> None:
    by_name = {arg.name: arg for arg in actual}
    for spec in declared:
        arg = by_name.get(spec.name)
        if arg is None:
            raise ModelLoadError(
                f"{path}: config {kind} '{spec.name}' is not in the model; the model has {sorted(by_name)}"
            )
        datatype = ORT_TYPES.get(arg.type)
        if datatype != spec.datatype:
            raise ModelLoadError(
                f"{path}: {kind} '{spec.name}' is {arg.type} in the model but {spec.datatype} in config.yaml"
            )
        shape = list(arg.shape)
        if len(shape) != len(spec.shape):
            raise ModelLoadError(
                f"{path}: {kind} '{spec.name}' has rank {len(shape)} in the model ({shape}) "
                f"but {list(spec.shape)} in config.yaml"
            )
        for i, (model_dim, config_dim) in enumerate(zip(shape, spec.shape, strict=True)):
            if isinstance(model_dim, int) and config_dim != -1 and model_dim != config_dim:
                raise ModelLoadError(
                    f"{path}: {kind} '{spec.name}' dimension {i} is {model_dim} in the model "
                    f"but {config_dim} in config.yaml"
                )
            if isinstance(model_dim, int) and i == 0 and model_dim != 1 and config_dim == -1:
                raise ModelLoadError(
                    f"{path}: {kind} '{spec.name}' has a fixed batch dimension {model_dim}; "
                    "export it with a dynamic batch dimension"
                )
    if kind == "input":
        missing = sorted(set(by_name) - {s.name for s in declared})
        if missing:
            raise ModelLoadError(f"{path}: model inputs {missing} are not declared in config.yaml")


def _as_str(name: str, array: Array) -> Array:
    """BYTES arrive as ``bytes`` objects; onnxruntime would store ``str(b"ab")`` = "b'ab'" in a
    tensor(string), so decode them (ONNX strings are UTF-8)."""
    out: Array = np.empty(array.shape, dtype=object)
    try:
        out.ravel()[:] = [v.decode() if isinstance(v, bytes) else v for v in array.ravel()]
    except UnicodeDecodeError:
        raise InvalidInput(f"input '{name}': BYTES data for an ONNX string tensor must be UTF-8") from None
    return out


class OnnxRuntime:
    def __init__(self, path: Path, config: ModelConfig, settings: Settings) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.onnx_intra_op_threads
        options.inter_op_num_threads = settings.onnx_inter_op_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises several unrelated types for bad files
            raise ModelLoadError(f"{path}: onnxruntime cannot load it: {exc}") from None
        _check_signature("input", config.inputs, self._session.get_inputs(), path)
        _check_signature("output", config.outputs, self._session.get_outputs(), path)
        self._output_names = [spec.name for spec in config.outputs]
        self._string_inputs = [spec.name for spec in config.inputs if spec.datatype == "BYTES"]

    def predict(self, inputs: dict[str, Array]) -> dict[str, Array]:
        if self._string_inputs:
            inputs = {**inputs, **{name: _as_str(name, inputs[name]) for name in self._string_inputs}}
        results = self._session.run(self._output_names, inputs)
        return dict(zip(self._output_names, results, strict=True))

    def close(self) -> None:
        del self._session

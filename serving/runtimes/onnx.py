"""onnxruntime runtime: one InferenceSession per version, signature checked against config."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from serving.errors import InvalidInput, ModelLoadError
from serving.inference import Array
from serving.modelconfig import ModelConfig, TensorSpec
from serving.runtimes.base import signature_mismatch
from serving.settings import Settings

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

# onnxruntime's exception class (onnxruntime_pybind11_state) -> the cause class unauthenticated
# callers see; its message (parser text, node names) goes to the log and the admin view only.
_LOAD_FAILURES = {
    "InvalidProtobuf": "not a valid ONNX model",
    "InvalidGraph": "not a valid ONNX graph",
    "NotImplemented": "uses an operator onnxruntime does not know",
}


def _signature_problems(kind: str, declared: tuple[TensorSpec, ...], actual: list[ort.NodeArg]) -> list[str]:
    """Every mismatch between config.yaml and the model's inputs or outputs."""
    by_name = {arg.name: arg for arg in actual}
    problems: list[str] = []
    for spec in declared:
        arg = by_name.get(spec.name)
        if arg is None:
            problems.append(
                f"config {kind} '{spec.name}' is not in the model; the model has {sorted(by_name)}"
            )
            continue
        datatype = ORT_TYPES.get(arg.type)
        if datatype != spec.datatype:
            problems.append(
                f"{kind} '{spec.name}' is {arg.type} in the model but {spec.datatype} in config.yaml"
            )
        shape = list(arg.shape)
        if len(shape) != len(spec.shape):
            problems.append(
                f"{kind} '{spec.name}' has rank {len(shape)} in the model ({shape}) "
                f"but {list(spec.shape)} in config.yaml"
            )
            continue
        for i, (model_dim, config_dim) in enumerate(zip(shape, spec.shape, strict=True)):
            if isinstance(model_dim, int) and config_dim != -1 and model_dim != config_dim:
                problems.append(
                    f"{kind} '{spec.name}' dimension {i} is {model_dim} in the model "
                    f"but {config_dim} in config.yaml"
                )
            if isinstance(model_dim, int) and i == 0 and model_dim != 1 and config_dim == -1:
                problems.append(
                    f"{kind} '{spec.name}' has a fixed batch dimension {model_dim}; "
                    "export it with a dynamic batch dimension"
                )
    if kind == "input":
        missing = sorted(set(by_name) - {s.name for s in declared})
        if missing:
            problems.append(f"model inputs {missing} are not declared in config.yaml")
    return problems


def _as_str(name: str, array: Array) -> Array:
    """BYTES arrive as ``bytes`` objects; onnxruntime would store ``str(b"ab")`` = "b'ab'" in a
    tensor(string), so decode them (ONNX strings are UTF-8)."""
    out: Array = np.empty(array.shape, dtype=object)
    try:
        out.ravel()[:] = [v.decode() if isinstance(v, bytes) else v for v in array.ravel()]
    except UnicodeDecodeError:
        raise InvalidInput(f"input '{name}': BYTES data for an ONNX string tensor must be UTF-8") from None
    return out


def _tensors(graph: Any) -> Iterator[Any]:
    """Every TensorProto of a graph and its subgraphs (initializers and node attributes)."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for sub in attr.graphs:
                yield from _tensors(sub)


def check_external_data(path: Path) -> None:
    """Refuse a model whose external-data files lie outside its version folder (``../``,
    absolute paths, symlinks out): a model file must not make the server read other files."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not a model at all: onnxruntime says why when it tries
        return
    folder = path.parent.resolve()
    for tensor in _tensors(model.graph):
        if not uses_external_data(tensor):
            continue
        location = ExternalDataInfo(tensor).location
        target = (folder / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(folder):
            raise ModelLoadError(
                f"{path}: tensor '{tensor.name}' keeps its data in '{location}', outside the "
                "model's folder; external data must sit beside model.onnx",
                "keeps tensor data outside the model's folder (external data must sit beside model.onnx)",
                path,
            )


log = logging.getLogger("serving.runtimes.onnx")


class OnnxRuntime:
    def __init__(self, path: Path, config: ModelConfig, settings: Settings) -> None:
        check_external_data(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.onnx_intra_op_threads
        options.inter_op_num_threads = settings.onnx_inter_op_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises several unrelated types for bad files
            cause = _LOAD_FAILURES.get(type(exc).__name__, "onnxruntime cannot load it")
            if "is not a registered function/op" in str(exc):  # raised as the generic Fail
                cause = _LOAD_FAILURES["NotImplemented"]
            raise ModelLoadError(f"{path}: onnxruntime cannot load it: {exc}", cause, path) from None
        problems = _signature_problems("input", config.inputs, self._session.get_inputs())
        problems += _signature_problems("output", config.outputs, self._session.get_outputs())
        if problems:
            mismatch = "; ".join(problems)
            raise signature_mismatch(path, mismatch)
        self._output_names = [spec.name for spec in config.outputs]
        self._string_inputs = [spec.name for spec in config.inputs if spec.datatype == "BYTES"]
        self._explain_with(path.parent)

    def _explain_with(self, version_dir: Path) -> None:
        """A version ``serving export`` made keeps its source booster: explain through it. A
        booster that does not load leaves the version serving, without explanations."""
        from serving.runtimes.explain import SourceBooster

        source = SourceBooster.find(version_dir)
        if source is None:
            return
        try:
            booster = SourceBooster(source)
        except Exception as exc:
            log.warning("%s: no explanations, the source booster does not load: %s", source, exc)
            return
        self.explain = booster
        self.feature_names = booster.feature_names

    def predict(self, inputs: dict[str, Array]) -> dict[str, Array]:
        if self._string_inputs:
            inputs = {**inputs, **{name: _as_str(name, inputs[name]) for name in self._string_inputs}}
        results = self._session.run(self._output_names, inputs)
        return dict(zip(self._output_names, results, strict=True))

    def close(self) -> None:
        del self._session

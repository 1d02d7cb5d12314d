"""Tiny real models for the reliability tests: slow, failing at run time, broken on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import GraphProto, ModelProto, OperatorSetIdProto, TensorProto, helper, numpy_helper

from tests.tinymodels import spec, write_config, write_identity_model


def _save(model_dir: Path, model: ModelProto, version: int = 1) -> Path:
    folder = model_dir / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def _model(graph: GraphProto, *extra_opsets: OperatorSetIdProto) -> ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15), *extra_opsets])
    model.ir_version = 8
    return model


def _io_config(model_dir: Path, width: int = 4) -> None:
    write_config(
        model_dir,
        {
            "platform": "onnx",
            "inputs": [spec("x", "FP32", [-1, width])],
            "outputs": [spec("y", "FP32", [-1, width])],
        },
    )


def write_slow_model(root: Path, name: str = "slow", size: int = 1024, rounds: int = 8) -> Path:
    """``y = x + 0 * sum(A @ A @ ...)`` where the square matrix A is built from x at run time
    (so onnxruntime cannot fold it away at load): real compute, tens to hundreds of ms."""
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Reshape", ["s", "one_one"], ["s11"]),
        helper.make_node("Expand", ["s11", "square"], ["m0"]),
    ]
    for i in range(rounds):
        nodes.append(helper.make_node("MatMul", [f"m{i}", f"m{i}"], [f"m{i + 1}"]))
    nodes += [
        helper.make_node("ReduceSum", [f"m{rounds}"], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
        helper.make_node("Add", ["x", "nothing"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
        initializer=[
            numpy_helper.from_array(np.array([1, 1], dtype=np.int64), "one_one"),
            numpy_helper.from_array(np.array([size, size], dtype=np.int64), "square"),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
        ],
    )
    model_dir = root / name
    _io_config(model_dir)
    _save(model_dir, _model(graph))
    return model_dir


def write_gather_model(root: Path, name: str = "gather") -> Path:
    """``y = table[int(x)]`` over a 10-entry table: fine for 0 <= x < 10, and onnxruntime
    raises at run time for any other index (a model that fails at predict for some inputs)."""
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["x"], ["idx"], to=TensorProto.INT64),
            helper.make_node("Gather", ["table", "idx"], ["y"], axis=0),
        ],
        "gather",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
        initializer=[numpy_helper.from_array(np.arange(10, dtype=np.float32) * 10, "table")],
    )
    model_dir = root / name
    _io_config(model_dir)
    _save(model_dir, _model(graph))
    return model_dir


def write_unknown_op_model(root: Path, name: str = "unknown-op") -> Path:
    """A well-formed ONNX file whose one node is an operator no runtime knows."""
    graph = helper.make_graph(
        [helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example.madeup")],
        "unknown_op",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
    )
    model_dir = root / name
    _io_config(model_dir)
    _save(model_dir, _model(graph, helper.make_opsetid("com.example.madeup", 1)))
    return model_dir


def write_external_data_model(root: Path, name: str, location: str) -> Path:
    """``y = x + bias`` with ``bias`` stored as external data at ``location`` (relative to
    the version folder). The bytes are written there, so only the path check can refuse it."""
    bias = np.arange(4, dtype=np.float32)
    tensor = numpy_helper.from_array(bias, "bias")
    model_dir = root / name
    folder = model_dir / "1"
    folder.mkdir(parents=True, exist_ok=True)
    target = (folder / location).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(bias.tobytes())
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(bias.nbytes))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "bias"], ["y"])],
        "external",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
        initializer=[tensor],
    )
    _io_config(model_dir)
    _save(model_dir, _model(graph))
    return model_dir


def write_good_model(root: Path, name: str = "good") -> Path:
    return write_identity_model(root, name, "FP32", width=4)

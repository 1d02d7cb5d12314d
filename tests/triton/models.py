"""Triton's example models (the ones its ``simple_*`` example clients call), as small ONNX
graphs written into a test's repository:

- ``simple``: INT32 ``INPUT0``, ``INPUT1`` [-1, 16] -> ``OUTPUT0`` = sum, ``OUTPUT1`` = difference;
- ``simple_string``: the same over BYTES tensors of decimal strings (Cast to INT32 and back);
- ``simple_identity``: BYTES ``INPUT0`` -> ``OUTPUT0`` unchanged.

All use the default warm-up (generated inputs), as a Triton user's repository would.
"""

from __future__ import annotations

from pathlib import Path

from onnx import TensorProto, helper

from tests.tinymodels import spec, write_config

WIDTH = 16


def _model(nodes: list[object], inputs: list[object], outputs: list[object]) -> bytes:
    graph = helper.make_graph(nodes, "triton_example", inputs, outputs)  # type: ignore[arg-type]
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def _tensor(name: str, onnx_type: int) -> object:
    return helper.make_tensor_value_info(name, onnx_type, [None, WIDTH])


def simple_onnx() -> bytes:
    return _model(
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
        ],
        [_tensor("INPUT0", TensorProto.INT32), _tensor("INPUT1", TensorProto.INT32)],
        [_tensor("OUTPUT0", TensorProto.INT32), _tensor("OUTPUT1", TensorProto.INT32)],
    )


def simple_string_onnx() -> bytes:
    cast = TensorProto.INT32
    return _model(
        [
            helper.make_node("Cast", ["INPUT0"], ["a"], to=cast),
            helper.make_node("Cast", ["INPUT1"], ["b"], to=cast),
            helper.make_node("Add", ["a", "b"], ["sum"]),
            helper.make_node("Sub", ["a", "b"], ["difference"]),
            helper.make_node("Cast", ["sum"], ["OUTPUT0"], to=TensorProto.STRING),
            helper.make_node("Cast", ["difference"], ["OUTPUT1"], to=TensorProto.STRING),
        ],
        [_tensor("INPUT0", TensorProto.STRING), _tensor("INPUT1", TensorProto.STRING)],
        [_tensor("OUTPUT0", TensorProto.STRING), _tensor("OUTPUT1", TensorProto.STRING)],
    )


def simple_identity_onnx() -> bytes:
    return _model(
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])],
        [_tensor("INPUT0", TensorProto.STRING)],
        [_tensor("OUTPUT0", TensorProto.STRING)],
    )


def _write(root: Path, name: str, datatype: str, inputs: list[str], outputs: list[str], graph: bytes) -> None:
    model_dir = root / name
    write_config(
        model_dir,
        {
            "platform": "onnx",
            "inputs": [spec(n, datatype, [-1, WIDTH]) for n in inputs],
            "outputs": [spec(n, datatype, [-1, WIDTH]) for n in outputs],
        },
    )
    (model_dir / "1").mkdir(exist_ok=True)
    (model_dir / "1" / "model.onnx").write_bytes(graph)


def write_triton_examples(root: Path) -> Path:
    """``simple``, ``simple_string`` and ``simple_identity`` under ``root``; returns ``root``."""
    _write(root, "simple", "INT32", ["INPUT0", "INPUT1"], ["OUTPUT0", "OUTPUT1"], simple_onnx())
    _write(root, "simple_string", "BYTES", ["INPUT0", "INPUT1"], ["OUTPUT0", "OUTPUT1"], simple_string_onnx())
    _write(root, "simple_identity", "BYTES", ["INPUT0"], ["OUTPUT0"], simple_identity_onnx())
    return root

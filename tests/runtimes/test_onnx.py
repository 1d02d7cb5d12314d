"""onnxruntime runtime: session options from settings, strings, several inputs and outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from serving.errors import InvalidInput
from serving.modelconfig import ModelConfig
from serving.runtimes.onnx import OnnxRuntime
from serving.settings import Settings
from tests.tinymodels import identity_onnx, spec


def identity_runtime(tmp_path: Path, datatype: str, settings: Settings | None = None) -> OnnxRuntime:
    path = tmp_path / "model.onnx"
    path.write_bytes(identity_onnx(datatype))
    config = ModelConfig.model_validate(
        {
            "platform": "onnx",
            "inputs": [spec("x", datatype, [-1, 3])],
            "outputs": [spec("y", datatype, [-1, 3])],
        }
    )
    return OnnxRuntime(path, config, settings or Settings())


def test_thread_counts_come_from_settings(tmp_path: Path) -> None:
    runtime = identity_runtime(tmp_path, "FP32", Settings(onnx_intra_op_threads=2, onnx_inter_op_threads=1))
    options = runtime._session.get_session_options()
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1


def test_bytes_reach_the_model_as_utf8_strings(tmp_path: Path) -> None:
    runtime = identity_runtime(tmp_path, "BYTES")
    data = np.empty((1, 3), dtype=object)
    data.ravel()[:] = [b"ab", b"c", "é".encode()]
    (out,) = runtime.predict({"x": data}).values()
    assert out.tolist() == [["ab", "c", "é"]]
    data.ravel()[0] = b"\xff"
    with pytest.raises(InvalidInput, match="must be UTF-8"):
        runtime.predict({"x": data})


def test_two_inputs_two_outputs_in_config_order(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Mul", ["a", "b"], ["product"])],
        "two",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 2]) for n in ("a", "b")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 2]) for n in ("product", "sum")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    config = ModelConfig.model_validate(
        {
            "platform": "onnx",
            "inputs": [spec("b", "FP32", [-1, 2]), spec("a", "FP32", [-1, 2])],
            "outputs": [spec("sum", "FP32", [-1, 2]), spec("product", "FP32", [-1, 2])],
        }
    )
    runtime = OnnxRuntime(path, config, Settings())
    a = np.array([[1, 2], [3, 4]], np.float32)
    b = np.array([[10, 20], [30, 40]], np.float32)
    out = runtime.predict({"a": a, "b": b})
    assert list(out) == ["sum", "product"]
    np.testing.assert_array_equal(out["sum"], a + b)
    np.testing.assert_array_equal(out["product"], a * b)

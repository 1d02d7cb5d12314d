"""gRPC codec: ModelInferRequest <-> serving.inference, typed and raw contents, BYTES, parameters."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest

from serving.errors import InvalidInput
from serving.inference import InferenceResponse, Tensor
from serving.protocol.grpc import codec
from serving.protocol.grpc.stubs import load

pb = load()


def _request(**kwargs: Any) -> Any:
    return pb.ModelInferRequest(model_name="m", **kwargs)


def test_typed_fp32_and_parameters() -> None:
    req = _request(id="r1", model_version="2")
    req.parameters["routing_key"].string_param = "user-7"
    req.parameters["priority"].int64_param = 3
    t = req.inputs.add(name="x", datatype="FP32", shape=[2, 2])
    t.contents.fp32_contents.extend([1.0, 2.0, 3.0, 4.5])
    req.outputs.add(name="y")
    decoded = codec.decode_request(req, max_elements=100)
    assert decoded.id == "r1" and decoded.version == "2"
    assert decoded.parameters == {"routing_key": "user-7", "priority": 3}
    (tensor,) = decoded.inputs
    assert tensor.data.dtype == np.float32 and tensor.data.shape == (2, 2)
    np.testing.assert_array_equal(tensor.data, [[1, 2], [3, 4.5]])
    assert [o.name for o in decoded.outputs or []] == ["y"]


def test_raw_contents_are_zero_copy() -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    req = _request(raw_input_contents=[array.tobytes()])
    req.inputs.add(name="x", datatype="FP32", shape=[3, 4])
    decoded = codec.decode_request(req, max_elements=100).inputs[0].data
    np.testing.assert_array_equal(decoded, array)
    # a view over the protobuf's bytes object, not a copy
    root: object = decoded
    while isinstance(root, np.ndarray):
        root = root.base
    assert isinstance(root, bytes) and root == array.tobytes()
    assert not decoded.flags.writeable


def test_raw_bytes_with_length_prefixes() -> None:
    items = [b"a", b"", b"hello"]
    raw = b"".join(struct.pack("<I", len(i)) + i for i in items)
    req = _request(raw_input_contents=[raw])
    req.inputs.add(name="s", datatype="BYTES", shape=[3])
    decoded = codec.decode_request(req, max_elements=100).inputs[0].data
    assert decoded.dtype == object and list(decoded) == items


@pytest.mark.parametrize(
    ("datatype", "values", "dtype"),
    [
        ("INT8", [-128, 127], np.int8),
        ("UINT16", [0, 65535], np.uint16),
        ("INT64", [-(2**40), 2**40], np.int64),
        ("BOOL", [True, False], np.bool_),
        ("FP64", [0.1, -2.5], np.float64),
    ],
)
def test_typed_datatypes(datatype: str, values: list[Any], dtype: type) -> None:
    req = _request()
    t = req.inputs.add(name="x", datatype=datatype, shape=[2])
    getattr(t.contents, codec.CONTENTS_FIELD[datatype]).extend(values)
    decoded = codec.decode_request(req, max_elements=100).inputs[0].data
    assert decoded.dtype == dtype
    np.testing.assert_array_equal(decoded, np.array(values, dtype=dtype))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda r: r.inputs.add(name="x", datatype="FP32", shape=[2, 2]).contents.fp32_contents.extend([1.0]),
         "fp32_contents has 1 values but shape [2, 2] needs 4"),
        (lambda r: r.inputs.add(name="x", datatype="FP16", shape=[1]), "send raw_input_contents"),
        (lambda r: r.inputs.add(name="x", datatype="FLOAT", shape=[1]), "unknown datatype 'FLOAT'"),
        (lambda r: r.inputs.add(name="x", datatype="INT8", shape=[1]).contents.int_contents.append(300),
         "out of range for INT8"),
        (lambda r: r.inputs.add(name="x", datatype="FP32", shape=[-1]), "non-negative"),
        (lambda r: None, "non-empty list"),
    ],
)  # fmt: skip
def test_typed_errors(build: Any, message: str) -> None:
    req = _request()
    build(req)
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[").replace("]", r"\]")):
        codec.decode_request(req, max_elements=100)


def test_raw_errors() -> None:
    req = _request(raw_input_contents=[b"\x00" * 12])
    req.inputs.add(name="x", datatype="FP32", shape=[2, 2])
    with pytest.raises(InvalidInput, match=r"raw data has 12 bytes but shape \[2, 2\] of FP32 needs 16"):
        codec.decode_request(req, max_elements=100)
    req = _request(raw_input_contents=[b"\x00" * 16, b"\x00"])
    req.inputs.add(name="x", datatype="FP32", shape=[2, 2])
    with pytest.raises(InvalidInput, match="raw_input_contents has 2 entries for 1 inputs"):
        codec.decode_request(req, max_elements=100)
    req = _request(raw_input_contents=[struct.pack("<I", 10) + b"abc"])
    req.inputs.add(name="s", datatype="BYTES", shape=[1])
    with pytest.raises(InvalidInput, match="runs past the end"):
        codec.decode_request(req, max_elements=100)
    req = _request(raw_input_contents=[b"\x00" * 16])
    req.inputs.add(name="x", datatype="FP32", shape=[2, 2]).contents.fp32_contents.append(1.0)
    with pytest.raises(InvalidInput, match="either contents or raw_input_contents"):
        codec.decode_request(req, max_elements=100)
    req = _request(raw_input_contents=[b""])
    req.inputs.add(name="x", datatype="FP32", shape=[1000, 1000])
    with pytest.raises(InvalidInput, match="above the limit 100"):
        codec.decode_request(req, max_elements=100)


def _response() -> InferenceResponse:
    probs = np.array([[0.25, 0.75], [0.5, 0.5]], dtype=np.float32)
    labels = np.array([1, 0], dtype=np.int64)
    names = np.array([b"yes", "no"], dtype=object)
    return InferenceResponse(
        "m",
        "3",
        [
            Tensor("p", "FP32", probs.shape, probs),
            Tensor("l", "INT64", labels.shape, labels),
            Tensor("s", "BYTES", names.shape, names),
        ],
        id="r9",
    )


def test_encode_typed() -> None:
    out = codec.encode_response(_response(), raw=False)
    assert (out.model_name, out.model_version, out.id) == ("m", "3", "r9")
    assert not out.raw_output_contents
    p, labels, s = out.outputs
    assert list(p.shape) == [2, 2] and list(p.contents.fp32_contents) == [0.25, 0.75, 0.5, 0.5]
    assert list(labels.contents.int64_contents) == [1, 0]
    assert list(s.contents.bytes_contents) == [b"yes", b"no"]


def test_encode_raw_round_trips() -> None:
    response = _response()
    out = codec.encode_response(response, raw=True)
    assert len(out.raw_output_contents) == 3
    assert all(not o.HasField("contents") for o in out.outputs)
    np.testing.assert_array_equal(
        np.frombuffer(out.raw_output_contents[0], dtype="<f4").reshape(2, 2), response.outputs[0].data
    )
    np.testing.assert_array_equal(np.frombuffer(out.raw_output_contents[1], dtype="<i8"), [1, 0])
    assert out.raw_output_contents[2] == struct.pack("<I", 3) + b"yes" + struct.pack("<I", 2) + b"no"


def test_fp16_output_forces_raw() -> None:
    half = np.array([1.5, 2.0], dtype=np.float16)
    out = codec.encode_response(InferenceResponse("m", "1", [Tensor("h", "FP16", (2,), half)]), raw=False)
    assert np.frombuffer(out.raw_output_contents[0], dtype="<f2").tolist() == [1.5, 2.0]

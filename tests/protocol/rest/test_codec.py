"""The OIP v2 / KServe v1 JSON codecs on their own: bytes -> InferenceRequest -> bytes."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from serving.errors import InvalidInput
from serving.inference import InferenceResponse, Tensor
from serving.protocol.rest.codec import (
    decode_request,
    decode_v1_request,
    encode_response,
    encode_v1_response,
    to_array,
)

LIMIT = 1 << 20


def body(**doc: Any) -> bytes:
    return orjson.dumps(doc)


@pytest.mark.parametrize(
    ("datatype", "data", "dtype"),
    [
        ("BOOL", [True, False], np.bool_),
        ("UINT8", [0, 255], np.uint8),
        ("UINT16", [0, 65535], np.uint16),
        ("UINT32", [0, 4294967295], np.uint32),
        ("UINT64", [0, 18446744073709551615], np.uint64),
        ("INT8", [-128, 127], np.int8),
        ("INT16", [-32768, 32767], np.int16),
        ("INT32", [-2147483648, 2147483647], np.int32),
        ("INT64", [-9223372036854775808, 9223372036854775807], np.int64),
        ("FP16", [0.5, -2.0], np.float16),
        ("FP32", [0.25, -1e30], np.float32),
        ("FP64", [0.1, 1e300], np.float64),
    ],
)
def test_to_array_keeps_every_value_exactly(datatype: str, data: list[Any], dtype: Any) -> None:
    array = to_array("x", datatype, (1, 2), [data])
    assert array.dtype == np.dtype(dtype) and array.shape == (1, 2)
    assert array.ravel().tolist() == [dtype(v).item() for v in data]


def test_bytes_become_an_object_array_of_bytes() -> None:
    array = to_array("s", "BYTES", (2, 1), [["é"], ["b"]])
    assert array.dtype == object and array.ravel().tolist() == ["é".encode(), b"b"]


def test_flat_and_nested_data_are_the_same_tensor() -> None:
    flat = to_array("x", "FP32", (2, 3), [1, 2, 3, 4, 5, 6])
    nested = to_array("x", "FP32", (2, 3), [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(flat, nested)
    deep = to_array("x", "INT32", (2, 1, 2), [[[1, 2]], [[3, 4]]])
    assert deep.shape == (2, 1, 2) and deep.ravel().tolist() == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("datatype", "shape", "data", "message"),
    [
        ("FP32", (2, 2), [1, 2, 3], "data has 3 elements but shape [2, 2] needs 4"),
        ("FP32", (1, 2), "12", "'data' must be a list"),
        ("INT8", (1, 2), [1, 200], "values out of range for INT8"),
        ("INT64", (1, 2), [1, 2.5], "INT64 data must be integers"),
        ("BOOL", (1, 2), [True, 1], "BOOL data must be true/false"),
        ("FP32", (1, 2), [1, None], "FP32 data must be JSON numbers; got null at position 1"),
        ("BYTES", (1, 2), ["a", None], "BYTES data must be strings; got null at position 1"),
        ("FP32", (2, 2), [[1, 2], [3]], "data is not a well-formed FP32 tensor"),
    ],
)
def test_to_array_errors(datatype: str, shape: tuple[int, ...], data: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=r"^input 'x': ") as info:
        to_array("x", datatype, shape, data)
    assert message in info.value.message


def test_decode_request_reads_every_field() -> None:
    request = decode_request(
        body(
            id="r-1",
            parameters={"k": 1},
            inputs=[
                {"name": "a", "datatype": "FP32", "shape": [1, 2], "data": [1, 2], "parameters": {"p": True}}
            ],
            outputs=[{"name": "y", "parameters": {"binary_data": False}}],
        ),
        "m",
        "3",
        LIMIT,
    )
    assert (request.model, request.version, request.id, request.parameters) == ("m", "3", "r-1", {"k": 1})
    (tensor,) = request.inputs
    assert (tensor.name, tensor.datatype, tensor.shape, tensor.parameters) == (
        "a",
        "FP32",
        (1, 2),
        {"p": True},
    )
    assert request.outputs is not None and [o.name for o in request.outputs] == ["y"]


def test_decode_request_limits_elements_before_allocating() -> None:
    doc = body(inputs=[{"name": "a", "datatype": "FP32", "shape": [1 << 30, 1 << 30], "data": [1]}])
    with pytest.raises(InvalidInput, match="above the limit"):
        decode_request(doc, "m", None, LIMIT)


def test_encode_response_is_oip_json() -> None:
    response = InferenceResponse(
        "m",
        "2",
        [
            Tensor("p", "FP32", (2, 2), np.array([[0.5, 0.25], [1.0, 0.0]], np.float32)),
            Tensor("h", "FP16", (1,), np.array([0.5], np.float16)),
            Tensor("s", "BYTES", (2,), np.array([b"a", b"\xc3\xa9"], dtype=object)),
            Tensor("b", "BOOL", (2,), np.array([True, False])),
        ],
        id="r-9",
    )
    doc = orjson.loads(encode_response(response))
    assert doc == {
        "model_name": "m",
        "model_version": "2",
        "id": "r-9",
        "outputs": [
            {"name": "p", "datatype": "FP32", "shape": [2, 2], "data": [0.5, 0.25, 1.0, 0.0]},
            {"name": "h", "datatype": "FP16", "shape": [1], "data": [0.5]},
            {"name": "s", "datatype": "BYTES", "shape": [2], "data": ["a", "é"]},
            {"name": "b", "datatype": "BOOL", "shape": [2], "data": [True, False]},
        ],
    }


def test_kserve_v1_round_trip() -> None:
    request = decode_v1_request(body(instances=[[1, 2], [3, 4]]), "m", "input", "FP32", LIMIT)
    (tensor,) = request.inputs
    assert tensor.name == "input" and tensor.data.dtype == np.float32 and tensor.shape == (2, 2)
    response = InferenceResponse(
        "m", "1", [Tensor("y", "FP32", (2, 2), np.array([[1, 0], [0, 1]], np.float32))]
    )
    assert orjson.loads(encode_v1_response(response)) == {"predictions": [[1.0, 0.0], [0.0, 1.0]]}
    for bad, message in [
        (b"[]", 'KServe v1 request body must be {"instances": [...]}'),
        (body(instances=[]), "'instances' is empty"),
        (body(instances=[[1, 2], [3]]), "'instances' rows must all have the same shape"),
    ]:
        with pytest.raises(InvalidInput) as info:
            decode_v1_request(bad, "m", "input", "FP32", LIMIT)
        assert info.value.message == message

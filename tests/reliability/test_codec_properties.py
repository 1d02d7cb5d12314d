"""Property-based tests: whatever bytes or documents arrive, the codecs either decode a
well-formed request or raise an InvalidInput-family error; nothing else escapes.

CODEC_EXAMPLES=2000 runs a longer search (CI uses 80 examples per property)."""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.datatypes import DATATYPES
from serving.errors import InvalidInput
from serving.inference import InferenceRequest
from serving.protocol import rawtensor
from serving.protocol.grpc import codec as grpc_codec
from serving.protocol.grpc.stubs import load
from serving.protocol.rest import binary, codec
from serving.protocol.rest.deadline import deadline_from_header

MAX_ELEMENTS = 10_000
FAST = settings(
    max_examples=int(os.environ.get("CODEC_EXAMPLES", "80")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

datatypes = st.sampled_from([*sorted(DATATYPES), "FP128", "", "fp32", "INT"])
dims = st.one_of(
    st.integers(-3, 6), st.integers(-(2**63), 2**64 - 1), st.floats(), st.booleans(), st.text(max_size=3)
)
shapes = st.one_of(
    st.lists(dims, max_size=5), st.integers(-(2**63), 2**64 - 1), st.text(max_size=5), st.none()
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(-1e6, 1e6),
    st.text(max_size=5),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=6), st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=30,
)
tensor_data = st.one_of(
    st.lists(scalars, max_size=12),
    st.lists(st.lists(st.floats(-10, 10) | st.integers(-5, 300), max_size=4), max_size=4),
    json_values,
)


@st.composite
def tensors(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        doc["name"] = draw(st.one_of(st.text(max_size=8), st.integers(-(2**63), 2**64 - 1), st.none()))
    doc["datatype"] = draw(st.one_of(datatypes, st.integers(-(2**63), 2**64 - 1)))
    doc["shape"] = draw(shapes)
    if draw(st.integers(0, 9)):
        doc["data"] = draw(tensor_data)
    if draw(st.booleans()):
        doc["parameters"] = draw(json_values)
    return doc


documents = st.one_of(
    st.fixed_dictionaries(
        {"inputs": st.lists(tensors(), max_size=3)},
        optional={"outputs": json_values, "id": json_values, "parameters": json_values},
    ),
    json_values,
)


def _well_formed(request: InferenceRequest) -> None:
    for tensor in request.inputs:
        assert isinstance(tensor.name, str)
        assert tensor.data.shape == tensor.shape
        assert math.prod(tensor.shape) <= MAX_ELEMENTS


@FAST
@given(st.binary(max_size=300))
def test_rest_json_random_bytes(body: bytes) -> None:
    with contextlib.suppress(InvalidInput):
        _well_formed(codec.decode_request(body, "m", None, MAX_ELEMENTS))


@FAST
@given(documents)
def test_rest_json_random_documents(doc: Any) -> None:
    with contextlib.suppress(InvalidInput):
        _well_formed(codec.decode_request(orjson.dumps(doc), "m", "1", MAX_ELEMENTS))


@FAST
@given(json_values, datatypes)
def test_kserve_v1_random_documents(instances: Any, datatype: str) -> None:
    body = orjson.dumps({"instances": instances})
    with contextlib.suppress(InvalidInput):
        _well_formed(codec.decode_v1_request(body, "m", "input", datatype or "FP32", MAX_ELEMENTS))


@st.composite
def binary_bodies(draw: st.DrawFn) -> tuple[bytes, bytes]:
    inputs = []
    for _ in range(draw(st.integers(0, 3))):
        spec = draw(tensors())
        if draw(st.booleans()):
            spec["parameters"] = {
                "binary_data_size": draw(st.one_of(st.integers(-4, 64), st.text(max_size=2)))
            }
        inputs.append(spec)
    header = orjson.dumps({"inputs": inputs})
    blob = draw(st.binary(max_size=80))
    length = draw(st.one_of(st.just(str(len(header))), st.integers(-5, 200).map(str), st.text(max_size=4)))
    return header + blob, length.encode(errors="replace")


@FAST
@given(binary_bodies())
def test_rest_binary_random_bodies(case: tuple[bytes, bytes]) -> None:
    body, length_header = case
    with contextlib.suppress(InvalidInput):
        length = binary.header_length(length_header, len(body))
        _well_formed(binary.decode_request(body, length, "m", None, MAX_ELEMENTS))


@FAST
@given(st.binary(max_size=120), st.integers(0, 130))
def test_rest_binary_random_bytes(body: bytes, length: int) -> None:
    with contextlib.suppress(InvalidInput):
        length = binary.header_length(str(length).encode(), len(body))
        _well_formed(binary.decode_request(body, length, "m", None, MAX_ELEMENTS))


@FAST
@given(datatypes, st.lists(st.integers(0, 5), max_size=3), st.binary(max_size=64))
def test_raw_tensor_random_bytes(datatype: str, shape: list[int], raw: bytes) -> None:
    try:
        array = rawtensor.from_raw("x", datatype, tuple(shape), raw)
    except InvalidInput:
        return
    assert array.shape == tuple(shape)


@st.composite
def grpc_requests(draw: st.DrawFn) -> Any:
    pb = load()
    req = pb.ModelInferRequest(
        model_name=draw(st.sampled_from(["m", "", "../x", "a" * 200, "ok-name"])),
        model_version=draw(st.sampled_from(["", "1", "0", "x", "../1"])),
    )
    use_raw = draw(st.booleans())
    for _ in range(draw(st.integers(0, 3))):
        datatype = draw(datatypes)
        tensor = req.inputs.add(
            name=draw(st.text(max_size=5)),
            datatype=datatype,
            shape=draw(st.lists(st.integers(-3, 6) | st.integers(-(2**62), 2**62), max_size=4)),
        )
        field = grpc_codec.CONTENTS_FIELD.get(datatype)
        if field is not None and draw(st.booleans()):
            n = draw(st.integers(0, 8))
            if field == "bytes_contents":
                getattr(tensor.contents, field).extend(
                    draw(st.lists(st.binary(max_size=4), min_size=n, max_size=n))
                )
            elif field == "bool_contents":
                getattr(tensor.contents, field).extend([True] * n)
            elif field.startswith("fp"):
                getattr(tensor.contents, field).extend(
                    draw(st.lists(st.floats(width=32), min_size=n, max_size=n))
                )
            elif field.startswith("uint"):
                getattr(tensor.contents, field).extend(
                    draw(st.lists(st.integers(0, 2**32 - 1), min_size=n, max_size=n))
                )
            else:
                getattr(tensor.contents, field).extend(
                    draw(st.lists(st.integers(-(2**31), 2**31 - 1), min_size=n, max_size=n))
                )
        if use_raw:
            req.raw_input_contents.append(draw(st.binary(max_size=40)))
    return req


@FAST
@given(grpc_requests())
def test_grpc_random_requests(req: Any) -> None:
    with contextlib.suppress(InvalidInput):
        _well_formed(grpc_codec.decode_request(req, MAX_ELEMENTS))


@FAST
@given(st.binary(max_size=30))
def test_timeout_header_random_bytes(value: bytes) -> None:
    try:
        deadline = deadline_from_header(value, now=0.0)
    except InvalidInput:
        return
    assert 0 < deadline <= 24 * 3600


def test_decoded_values_round_trip() -> None:
    """The property tests accept decoding; check one decode is also right, not just quiet."""
    body = orjson.dumps(
        {"inputs": [{"name": "x", "datatype": "INT16", "shape": [2, 2], "data": [[1, -2], [3, 4]]}]}
    )
    request = codec.decode_request(body, "m", None, MAX_ELEMENTS)
    np.testing.assert_array_equal(request.inputs[0].data, np.array([[1, -2], [3, 4]], dtype=np.int16))

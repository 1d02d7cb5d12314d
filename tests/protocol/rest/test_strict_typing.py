"""Strict JSON typing in the REST codec: numeric tensors take JSON numbers only (integers
only for INT/UINT), BOOL true/false only, BYTES strings only; the error names the input and
the first offending position (flat, row-major)."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.errors import InvalidInput
from serving.protocol.rest import codec

NUMERIC = ["FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"]
FLOATS = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, width=32)
SMALL_INTS = st.integers(min_value=0, max_value=100)
INTRUDERS: st.SearchStrategy[object] = st.one_of(
    st.text(max_size=5), st.booleans(), st.none(), st.just({}), st.sampled_from(["5.1", "1", "nan", ""])
)


def body(datatype: str, data: list[Any], name: str = "in0") -> bytes:
    doc = {"inputs": [{"name": name, "datatype": datatype, "shape": [len(data)], "data": data}]}
    return orjson.dumps(doc)


@settings(max_examples=150, deadline=None)
@given(
    datatype=st.sampled_from(NUMERIC),
    values=st.lists(SMALL_INTS, min_size=1, max_size=20),
    intruder=INTRUDERS,
    where=st.integers(min_value=0, max_value=19),
)
def test_anything_but_a_number_in_a_numeric_tensor_is_refused_at_its_position(
    datatype: str, values: list[int], intruder: Any, where: int
) -> None:
    where = where % (len(values) + 1)
    data = [*values[:where], intruder, *values[where:]]
    with pytest.raises(InvalidInput) as err:
        codec.decode_request(body(datatype, data), "m", None, 1 << 20)
    message = err.value.message
    assert "input 'in0'" in message and f"at position {where}" in message, message


@settings(max_examples=100, deadline=None)
@given(
    datatype=st.sampled_from(["FP16", "FP32", "FP64"]),
    values=st.lists(st.one_of(FLOATS, SMALL_INTS), min_size=1),
)
def test_json_numbers_are_accepted_in_float_tensors(datatype: str, values: list[float]) -> None:
    request = codec.decode_request(body(datatype, values), "m", None, 1 << 20)
    dtype = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}[datatype]
    np.testing.assert_array_equal(request.inputs[0].data, np.array(values, dtype=dtype))


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(st.booleans(), min_size=1, max_size=10),
    intruder=st.one_of(SMALL_INTS, FLOATS, st.text(max_size=3), st.none()),
    where=st.integers(min_value=0, max_value=10),
)
def test_bool_tensors_take_booleans_only(values: list[bool], intruder: Any, where: int) -> None:
    assert codec.decode_request(body("BOOL", values), "m", None, 100).inputs[0].data.tolist() == values
    where = where % (len(values) + 1)
    data = [*values[:where], intruder, *values[where:]]
    with pytest.raises(InvalidInput, match=f"at position {where}"):
        codec.decode_request(body("BOOL", data), "m", None, 100)


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(st.text(max_size=5), min_size=1, max_size=10),
    intruder=st.one_of(SMALL_INTS, FLOATS, st.booleans(), st.none()),
    where=st.integers(min_value=0, max_value=10),
)
def test_bytes_tensors_take_strings_only(values: list[str], intruder: Any, where: int) -> None:
    decoded = codec.decode_request(body("BYTES", values), "m", None, 100).inputs[0].data
    assert decoded.tolist() == [v.encode() for v in values]
    where = where % (len(values) + 1)
    data = [*values[:where], intruder, *values[where:]]
    with pytest.raises(InvalidInput, match=f"at position {where}"):
        codec.decode_request(body("BYTES", data), "m", None, 100)


@pytest.mark.parametrize(
    ("data", "datatype", "expected"),
    [
        (
            ["5.1", 3.5, 1.4, 0.2],
            "FP32",
            'FP32 data must be JSON numbers; got the string "5.1" at position 0',
        ),
        ([5.1, True, 1.4, 0.2], "FP32", "got the boolean true at position 1"),
        ([[1, 2], [3, False]], "INT64", "INT64 data must be integers; got the boolean false at position 3"),
        ([1, 2.5], "INT32", "got the number 2.5 at position 1"),
        ([1.0, None], "FP64", "got null at position 1"),
    ],
)
def test_messages_name_the_input_the_type_and_the_position(
    data: list[Any], datatype: str, expected: str
) -> None:
    shape = [2, 2] if isinstance(data[0], list) else [len(data)]
    doc = {"inputs": [{"name": "features", "datatype": datatype, "shape": shape, "data": data}]}
    with pytest.raises(InvalidInput) as err:
        codec.decode_request(orjson.dumps(doc), "m", None, 100)
    assert err.value.message.startswith("input 'features': ") and expected in err.value.message


def test_booleans_elsewhere_in_the_body_do_not_hide_a_boolean_in_a_tensor() -> None:
    # The scan for booleans among numbers runs when the body holds true/false anywhere.
    doc = {
        "parameters": {"flag": True},
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1.0, 2.0]}],
    }
    assert codec.decode_request(orjson.dumps(doc), "m", None, 100).inputs[0].data.tolist() == [1.0, 2.0]
    doc["inputs"][0]["data"] = [1.0, False]  # type: ignore[index]
    with pytest.raises(InvalidInput, match="position 1"):
        codec.decode_request(orjson.dumps(doc), "m", None, 100)


def test_kserve_v1_instances_are_typed_strictly_too() -> None:
    with pytest.raises(InvalidInput, match="position 1"):
        codec.decode_v1_request(b'{"instances": [[1.0, "2"]]}', "m", "x", "FP32", 100)

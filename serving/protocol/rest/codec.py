"""OIP v2 REST JSON (and KServe v1) codecs: bytes -> InferenceRequest -> bytes.

orjson straight into numpy; no pydantic over tensor data. Every decoding problem is an
InvalidInput naming the tensor and what is wrong.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson

from serving.datatypes import numpy_dtype
from serving.errors import InvalidInput
from serving.types import Array, InferenceRequest, InferenceResponse, RequestedOutput, Tensor

_INT_KINDS = frozenset("iu")
_MAX_RANK = 16


def loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None


def check_shape(name: str, shape: Any, max_elements: int) -> tuple[int, ...]:
    if not isinstance(shape, list) or len(shape) > _MAX_RANK:
        raise InvalidInput(f"input '{name}': 'shape' must be a list of at most {_MAX_RANK} integers")
    count = 1
    for dim in shape:
        if type(dim) is not int or dim < 0:
            raise InvalidInput(f"input '{name}': shape {shape} must hold non-negative integers")
        count *= dim
    if count > max_elements:
        raise InvalidInput(
            f"input '{name}': shape {shape} has {count} elements, above the limit {max_elements}"
        )
    return tuple(shape)


def _to_bytes(name: str, item: Any) -> bytes:
    if isinstance(item, str):
        return item.encode()
    if isinstance(item, bytes):
        return item
    raise InvalidInput(f"input '{name}': BYTES data must be strings, got {type(item).__name__}")


def _flatten(items: list[Any]) -> list[Any]:
    out: list[Any] = []
    stack = [iter(items)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                if len(stack) > _MAX_RANK:
                    raise InvalidInput(f"data is nested deeper than {_MAX_RANK} levels")
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def to_array(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> Array:
    """JSON ``data`` (flat or nested, row-major) -> numpy array of ``shape``."""
    dtype = numpy_dtype(datatype)
    if not isinstance(data, list):
        raise InvalidInput(f"input '{name}': 'data' must be a list")
    try:
        if datatype == "BYTES":
            array: Array = np.empty(len(flat := _flatten(data)), dtype=object)
            array[:] = [_to_bytes(name, item) for item in flat]
        elif dtype.kind in _INT_KINDS or datatype == "BOOL":
            raw = np.array(data)
            if raw.size == 0:
                raw = raw.astype(dtype)
            elif datatype == "BOOL":
                if raw.dtype.kind != "b":
                    raise InvalidInput(f"input '{name}': BOOL data must be true/false")
            elif raw.dtype.kind not in _INT_KINDS:
                # numpy turns a mix of small ints and ints above INT64's range (UINT64's upper
                # half) into float64 or object: convert those exactly, still rejecting floats.
                if raw.dtype.kind not in "fO" or not all(type(v) is int for v in _flatten(data)):
                    raise InvalidInput(f"input '{name}': {datatype} data must be integers")
                try:
                    raw = np.array(data, dtype=dtype)
                except OverflowError:
                    raise InvalidInput(f"input '{name}': values out of range for {datatype}") from None
            else:
                info = np.iinfo(dtype.type)  # type: ignore[type-var]
                if raw.min() < info.min or raw.max() > info.max:
                    raise InvalidInput(f"input '{name}': values out of range for {datatype}")
            array = raw.astype(dtype, copy=False)
        else:
            with np.errstate(over="ignore"):  # values beyond the type become inf: refused below
                array = np.array(data, dtype=dtype)
            if array.dtype.kind == "f" and datatype != "FP64" and array.size and not np.isfinite(array).all():
                raise InvalidInput(f"input '{name}': null or value out of range for {datatype}")
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(f"input '{name}': data is not a well-formed {datatype} tensor ({exc})") from None
    expected = math.prod(shape)
    if array.size != expected:
        raise InvalidInput(
            f"input '{name}': data has {array.size} elements but shape {list(shape)} needs {expected}"
        )
    return array.reshape(shape)


def decode_request(body: bytes, model: str, version: str | None, max_elements: int) -> InferenceRequest:
    doc = loads(body)
    if not isinstance(doc, dict):
        raise InvalidInput("request body must be a JSON object with 'inputs'")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("'inputs' must be a non-empty list of tensors")
    inputs: list[Tensor] = []
    for i, raw in enumerate(raw_inputs):
        if not isinstance(raw, dict):
            raise InvalidInput(f"inputs[{i}] must be an object with name, datatype, shape, data")
        name = raw.get("name")
        datatype = raw.get("datatype")
        if not isinstance(name, str) or not isinstance(datatype, str):
            raise InvalidInput(f"inputs[{i}]: 'name' and 'datatype' must be strings")
        if "data" not in raw:
            raise InvalidInput(f"input '{name}': 'data' is missing")
        shape = check_shape(name, raw.get("shape"), max_elements)
        parameters = raw.get("parameters")
        inputs.append(Tensor(name, datatype, shape, to_array(name, datatype, shape, raw["data"]), parameters))
    return finish_request(doc, model, version, inputs)


def finish_request(
    doc: dict[str, Any], model: str, version: str | None, inputs: list[Tensor]
) -> InferenceRequest:
    """The request fields beside the inputs (outputs, id, parameters); shared with the binary codec."""
    outputs = None
    raw_outputs = doc.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise InvalidInput("'outputs' must be a list of {name} objects")
        outputs = []
        for raw in raw_outputs:
            if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                raise InvalidInput("each requested output needs a string 'name'")
            params = raw.get("parameters")
            if params is not None and not isinstance(params, dict):
                raise InvalidInput(f"output '{raw['name']}': 'parameters' must be an object")
            outputs.append(RequestedOutput(raw["name"], params))
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")
    parameters = doc.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise InvalidInput("'parameters' must be an object")
    return InferenceRequest(model, version, inputs, request_id, outputs, parameters)


def _json_data(array: Array) -> Any:
    if array.dtype == object or array.dtype.kind == "S":
        return [v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in array.ravel()]
    if array.dtype == np.float16:
        array = array.astype(np.float32)
    return np.ascontiguousarray(array).ravel()


def encode_response(response: InferenceResponse) -> bytes:
    doc: dict[str, Any] = {"model_name": response.model, "model_version": response.version}
    if response.id is not None:
        doc["id"] = response.id
    if response.parameters:
        doc["parameters"] = response.parameters
    doc["outputs"] = [
        {"name": t.name, "datatype": t.datatype, "shape": list(t.shape), "data": _json_data(t.data)}
        for t in response.outputs
    ]
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


def decode_v1_request(
    body: bytes, model: str, input_name: str, datatype: str, max_elements: int
) -> InferenceRequest:
    """KServe v1 ``{"instances": [...]}``: the instances are rows of the model's one input."""
    doc = loads(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("instances"), list):
        raise InvalidInput('KServe v1 request body must be {"instances": [...]}')
    instances = doc["instances"]
    if not instances:
        raise InvalidInput("'instances' is empty")
    try:
        shape = np.shape(instances)
    except ValueError:
        raise InvalidInput("'instances' rows must all have the same shape") from None
    shape = check_shape(input_name, list(shape), max_elements)
    tensor = Tensor(input_name, datatype, shape, to_array(input_name, datatype, shape, instances))
    return InferenceRequest(model, None, [tensor])


def encode_v1_response(response: InferenceResponse) -> bytes:
    first = response.outputs[0].data
    return orjson.dumps(
        {
            "predictions": _json_data(first).reshape(first.shape)
            if first.dtype != object
            else _json_data(first)
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )

"""OIP v2 REST JSON (and KServe v1) codecs: bytes -> InferenceRequest -> bytes.

orjson straight into numpy; no pydantic over tensor data. Every decoding problem is an
InvalidInput naming the tensor and what is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from serving.datatypes import numpy_dtype
from serving.errors import InvalidInput
from serving.inference import Array, InferenceRequest, InferenceResponse, RequestedOutput, Tensor

if TYPE_CHECKING:
    from serving.core.dataplane import ExplainResult

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


def _is_number(value: Any) -> bool:
    kind = type(value)
    return kind is float or kind is int  # not bool: type() is exact


def _is_int(value: Any) -> bool:
    return type(value) is int


def _is_bool(value: Any) -> bool:
    return type(value) is bool


def _is_str(value: Any) -> bool:
    return type(value) is str


_WANTED: dict[Callable[[Any], bool], str] = {
    _is_number: "JSON numbers",
    _is_int: "integers",
    _is_bool: "true/false",
    _is_str: "strings",
}


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {'true' if value else 'false'}"
    if isinstance(value, str):
        return f"the string {orjson.dumps(value[:32]).decode()}"
    if isinstance(value, dict):
        return "an object"
    return f"the number {value!r}"


def _check_items(name: str, datatype: str, data: list[Any], accept: Callable[[Any], bool]) -> None:
    """Raise InvalidInput naming the first element (flat, row-major) ``accept`` refuses."""
    for position, value in enumerate(_flatten(data)):
        if not accept(value):
            raise InvalidInput(
                f"input '{name}': {datatype} data must be {_WANTED[accept]}; "
                f"got {_describe(value)} at position {position} (flat, row-major)"
            )


def to_array(
    name: str, datatype: str, shape: tuple[int, ...], data: Any, may_hold_bools: bool = True
) -> Array:
    """JSON ``data`` (flat or nested, row-major) -> numpy array of ``shape``.

    Strict typing: numeric tensors take JSON numbers only (integers only for INT/UINT), BOOL
    takes true/false only, BYTES strings only; anything else is an InvalidInput naming the
    first offending position. numpy's own type discovery (C) finds strings, nulls and
    objects; it turns a boolean among numbers into a number, so those need a Python scan,
    which the caller skips with ``may_hold_bools=False`` when the body has no ``true`` or
    ``false`` at all."""
    dtype = numpy_dtype(datatype)
    if not isinstance(data, list):
        raise InvalidInput(f"input '{name}': 'data' must be a list")
    try:
        if datatype == "BYTES":
            flat = _flatten(data)
            if not all(type(item) is str for item in flat):
                _check_items(name, datatype, data, _is_str)
            array: Array = np.empty(len(flat), dtype=object)
            array[:] = [item.encode() for item in flat]
        elif datatype == "BOOL":
            raw = np.array(data)
            if raw.size == 0:
                raw = raw.astype(dtype)
            elif raw.dtype.kind != "b":
                _check_items(name, datatype, data, _is_bool)
            array = raw
        elif dtype.kind in _INT_KINDS:
            raw = np.array(data)
            if raw.size == 0:
                raw = raw.astype(dtype)
            elif raw.dtype.kind not in _INT_KINDS:
                # numpy turns a mix of small ints and ints above INT64's range (UINT64's upper
                # half) into float64 or object: convert those exactly, refusing anything else.
                _check_items(name, datatype, data, _is_int)
                try:
                    raw = np.array(data, dtype=dtype)
                except OverflowError:
                    raise InvalidInput(f"input '{name}': values out of range for {datatype}") from None
            else:
                if may_hold_bools:
                    _check_items(name, datatype, data, _is_int)
                info = np.iinfo(dtype.type)  # type: ignore[type-var]
                if raw.min() < info.min or raw.max() > info.max:
                    raise InvalidInput(f"input '{name}': values out of range for {datatype}")
            array = raw.astype(dtype, copy=False)
        else:
            raw = np.array(data)
            if raw.dtype.kind not in "fiu":
                _check_items(name, datatype, data, _is_number)
                raw = np.array(data, dtype=np.float64)  # ints beyond INT64 (object): exact enough
            elif may_hold_bools:
                _check_items(name, datatype, data, _is_number)
            with np.errstate(over="ignore"):  # values beyond the type become inf: refused below
                array = raw.astype(dtype, copy=False)
            if datatype != "FP64" and array.size and not np.isfinite(array).all():
                raise InvalidInput(f"input '{name}': value out of range for {datatype}")
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
    may_hold_bools = b"true" in body or b"false" in body  # memchr-fast; see to_array
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
        array = to_array(name, datatype, shape, raw["data"], may_hold_bools)
        inputs.append(Tensor(name, datatype, shape, array, parameters))
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
    may_hold_bools = b"true" in body or b"false" in body
    array = to_array(input_name, datatype, shape, instances, may_hold_bools)
    tensor = Tensor(input_name, datatype, shape, array)
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


def encode_explanation(result: ExplainResult) -> bytes:
    """An explanation as JSON: feature names, contributions ([N][F], or [N][K][F] with K
    classes), bias and raw margin ([N], or [N][K]), all in the booster's raw margin."""
    e = result.explanation
    return orjson.dumps(
        {
            "model_name": result.model,
            "model_version": result.version,
            "feature_names": result.feature_names,
            "contributions": np.asarray(e.contributions, dtype=np.float64).tolist(),
            "bias": np.asarray(e.bias, dtype=np.float64).tolist(),
            "margin": np.asarray(e.margin, dtype=np.float64).tolist(),
        }
    )

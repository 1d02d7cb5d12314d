"""The OIP / Triton REST binary tensor data extension.

A request with header ``Inference-Header-Content-Length: N`` carries an N-byte JSON header
followed by the raw tensor bytes of every input whose ``parameters.binary_data_size`` is set,
in input order. Outputs are returned raw when asked for, per output
(``outputs[].parameters.binary_data: true``) or for all outputs (request parameter
``binary_data_output: true``); the response then is JSON header + raw bytes with the same
header and ``application/octet-stream``. BYTES elements carry 4-byte little-endian length
prefixes. Fixed-size inputs are decoded with ``np.frombuffer`` over a memoryview: no copy.
"""

from __future__ import annotations

from typing import Any

import orjson

from serving.errors import InvalidInput
from serving.inference import InferenceRequest, InferenceResponse, Tensor
from serving.protocol.rawtensor import from_raw, to_raw
from serving.protocol.rest import codec

HEADER = b"inference-header-content-length"


def header_length(value: bytes, body_length: int) -> int:
    if not value.strip().isdigit():
        raise InvalidInput("Inference-Header-Content-Length must be a non-negative integer")
    length = int(value)
    if length > body_length:
        raise InvalidInput(
            f"Inference-Header-Content-Length is {length} but the body has only {body_length} bytes"
        )
    return length


def decode_request(
    body: bytes, json_length: int, model: str, version: str | None, max_elements: int
) -> InferenceRequest:
    """JSON header + binary section -> InferenceRequest; sizes must add up exactly."""
    view = memoryview(body)
    doc = codec.loads(bytes(view[:json_length]))  # the JSON header only; tensors stay in place
    if not isinstance(doc, dict):
        raise InvalidInput("request header must be a JSON object with 'inputs'")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("'inputs' must be a non-empty list of tensors")
    offset = json_length
    inputs: list[Tensor] = []
    for i, raw in enumerate(raw_inputs):
        if not isinstance(raw, dict):
            raise InvalidInput(f"inputs[{i}] must be an object with name, datatype, shape")
        name, datatype = raw.get("name"), raw.get("datatype")
        if not isinstance(name, str) or not isinstance(datatype, str):
            raise InvalidInput(f"inputs[{i}]: 'name' and 'datatype' must be strings")
        shape = codec.check_shape(name, raw.get("shape"), max_elements)
        parameters = raw.get("parameters")
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is None:
            if "data" not in raw:
                raise InvalidInput(f"input '{name}': give 'data' or parameters.binary_data_size")
            array = codec.to_array(name, datatype, shape, raw["data"])
        else:
            if type(size) is not int or size < 0:
                raise InvalidInput(f"input '{name}': binary_data_size must be a non-negative integer")
            if offset + size > len(body):
                raise InvalidInput(
                    f"input '{name}': binary_data_size {size} runs past the end of the body "
                    f"({len(body) - offset} binary bytes left)"
                )
            array = from_raw(name, datatype, shape, view[offset : offset + size])
            offset += size
        inputs.append(Tensor(name, datatype, shape, array, parameters))
    if offset != len(body):
        raise InvalidInput(
            f"the body has {len(body) - offset} bytes after the last binary input; "
            "binary_data_size values and Inference-Header-Content-Length do not add up"
        )
    return codec.finish_request(doc, model, version, inputs)


def binary_outputs(request: InferenceRequest) -> set[str]:
    """Names of the outputs the client wants as raw bytes (empty: a plain JSON response)."""
    default = bool((request.parameters or {}).get("binary_data_output", False))
    if not request.outputs:
        return {"*"} if default else set()
    wanted = set()
    for output in request.outputs:
        flag = (output.parameters or {}).get("binary_data", default)
        if flag:
            wanted.add(output.name)
    return wanted


def encode_response(response: InferenceResponse, binary: set[str]) -> tuple[bytes, int]:
    """-> (body, JSON header length). Outputs named in ``binary`` ("*": all) go raw."""
    doc: dict[str, Any] = {"model_name": response.model, "model_version": response.version}
    if response.id is not None:
        doc["id"] = response.id
    if response.parameters:
        doc["parameters"] = response.parameters
    blobs: list[bytes] = []
    outputs = []
    for tensor in response.outputs:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        if "*" in binary or tensor.name in binary:
            blob = to_raw(tensor.datatype, tensor.data)
            entry["parameters"] = {**(tensor.parameters or {}), "binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            if tensor.parameters:
                entry["parameters"] = tensor.parameters
            entry["data"] = codec._json_data(tensor.data)
        outputs.append(entry)
    doc["outputs"] = outputs
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    return b"".join([header, *blobs]), len(header)

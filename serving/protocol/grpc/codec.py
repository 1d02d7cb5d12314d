"""OIP v2 gRPC codecs: ModelInferRequest <-> serving.types, kept out of the servicer.

Inputs come either typed (``contents.fp32_contents`` ...) or raw (``raw_input_contents``, one
entry per input, zero-copy into numpy). The response mirrors the request: raw in, raw out, so
tritonclient and KServe clients get raw bytes and grpcurl users get readable typed contents.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import numpy as np

from serving.datatypes import numpy_dtype
from serving.errors import InvalidInput
from serving.modelconfig import check_model_name, check_version_name
from serving.protocol.grpc.stubs import load
from serving.protocol.rawtensor import from_raw, to_raw
from serving.protocol.rest.codec import check_shape
from serving.types import Array, InferenceRequest, InferenceResponse, Parameters, RequestedOutput, Tensor

# Which InferTensorContents field carries each datatype (FP16 has none: raw only).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def params_from_pb(params: Any) -> Parameters | None:
    """map<string, InferParameter> -> dict (None when empty)."""
    if not params:
        return None
    out: Parameters = {}
    for key, value in params.items():
        which = value.WhichOneof("parameter_choice")
        out[key] = getattr(value, which) if which else None
    return out


def params_to_pb(target: MutableMapping[str, Any], params: Parameters) -> None:
    for key, value in params.items():
        if isinstance(value, bool):
            target[key].bool_param = value
        elif isinstance(value, int):
            target[key].int64_param = value
        elif value is not None:
            target[key].string_param = value if isinstance(value, str) else str(value)


def _from_contents(name: str, datatype: str, shape: tuple[int, ...], contents: Any) -> Array:
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        numpy_dtype(datatype)  # unknown datatype -> InvalidInput naming the choices
        raise InvalidInput(f"input '{name}': {datatype} has no typed contents field; send raw_input_contents")
    values = getattr(contents, field)
    count = int(np.prod(shape))
    if len(values) != count:
        raise InvalidInput(
            f"input '{name}': {field} has {len(values)} values but shape {list(shape)} needs {count}"
        )
    dtype = numpy_dtype(datatype)
    if datatype == "BYTES":
        array: Array = np.empty(count, dtype=object)
        array[:] = list(values)
    elif dtype.kind in "iu" and dtype.itemsize < 4:
        wide = np.array(values, dtype=np.int64)
        info = np.iinfo(dtype.type)  # type: ignore[type-var]
        if wide.size and (wide.min() < info.min or wide.max() > info.max):
            raise InvalidInput(f"input '{name}': values out of range for {datatype}")
        array = wide.astype(dtype)
    else:
        array = np.array(values, dtype=dtype)
    return array.reshape(shape)


def decode_request(pb: Any, max_elements: int) -> InferenceRequest:
    """ModelInferRequest -> InferenceRequest; InvalidInput names the tensor and the problem."""
    check_model_name(pb.model_name)
    version = pb.model_version or None
    if version is not None:
        check_version_name(version)
    if not pb.inputs:
        raise InvalidInput("'inputs' must be a non-empty list of tensors")
    raw = pb.raw_input_contents
    if raw and len(raw) != len(pb.inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries for {len(pb.inputs)} inputs; give one per input"
        )
    inputs: list[Tensor] = []
    for i, tensor in enumerate(pb.inputs):
        shape = check_shape(tensor.name, list(tensor.shape), max_elements)
        if raw:
            if tensor.HasField("contents"):
                raise InvalidInput(
                    f"input '{tensor.name}': use either contents or raw_input_contents, not both"
                )
            numpy_dtype(tensor.datatype)
            array = from_raw(tensor.name, tensor.datatype, shape, raw[i])
        else:
            array = _from_contents(tensor.name, tensor.datatype, shape, tensor.contents)
        inputs.append(Tensor(tensor.name, tensor.datatype, shape, array, params_from_pb(tensor.parameters)))
    outputs = [RequestedOutput(o.name, params_from_pb(o.parameters)) for o in pb.outputs] or None
    return InferenceRequest(
        pb.model_name,
        version,
        inputs,
        pb.id or None,
        outputs,
        params_from_pb(pb.parameters),
        protocol="grpc",
    )


def encode_response(response: InferenceResponse, raw: bool) -> Any:
    """InferenceResponse -> ModelInferResponse, raw_output_contents when ``raw`` (or FP16)."""
    stubs = load()
    out = stubs.ModelInferResponse(
        model_name=response.model, model_version=response.version, id=response.id or ""
    )
    if response.parameters:
        params_to_pb(out.parameters, response.parameters)
    # raw_output_contents is all-or-nothing, and FP16 can only travel raw.
    use_raw = raw or any(t.datatype not in CONTENTS_FIELD for t in response.outputs)
    for tensor in response.outputs:
        entry = out.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        if tensor.parameters:
            params_to_pb(entry.parameters, tensor.parameters)
        if use_raw:
            out.raw_output_contents.append(to_raw(tensor.datatype, tensor.data))
        elif tensor.datatype == "BYTES":
            entry.contents.bytes_contents.extend(
                v if isinstance(v, bytes) else str(v).encode() for v in tensor.data.ravel()
            )
        else:
            getattr(entry.contents, CONTENTS_FIELD[tensor.datatype]).extend(tensor.data.ravel().tolist())
    return out

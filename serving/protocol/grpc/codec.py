"""OIP v2 gRPC codecs: ModelInferRequest <-> serving.inference, kept out of the servicer.

Inputs come either typed (``contents.fp32_contents`` ...) or raw (``raw_input_contents``, one
entry per input, zero-copy into numpy). The response mirrors the request: raw in, raw out, so
tritonclient and KServe clients get raw bytes and grpcurl users get readable typed contents.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from google.protobuf.internal.containers import MessageMap

from serving.datatypes import numpy_dtype
from serving.errors import InvalidInput
from serving.inference import Array, InferenceRequest, InferenceResponse, Parameters, RequestedOutput, Tensor
from serving.modelconfig import check_model_name, check_version_name
from serving.protocol.grpc.generated import oip_v2_pb2 as oip
from serving.protocol.rawtensor import from_raw, to_raw
from serving.protocol.rest.codec import check_shape

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


_MAX_RANK = 16  # as serving.protocol.rest.codec.check_shape, which words every shape error
_KNOWN_NAMES_MAX = 1024  # valid model names decode_request remembers per caller


def params_from_pb(params: Mapping[str, oip.InferParameter]) -> Parameters | None:
    """map<string, InferParameter> -> dict (None when empty)."""
    if not params:
        return None
    out: Parameters = {}
    for key, value in params.items():
        which = value.WhichOneof("parameter_choice")
        out[key] = getattr(value, which) if which else None
    return out


def params_to_pb(target: MessageMap[str, oip.InferParameter], params: Parameters) -> None:
    for key, value in params.items():
        if isinstance(value, bool):
            target[key].bool_param = value
        elif isinstance(value, int):
            target[key].int64_param = value
        elif value is not None:
            target[key].string_param = value if isinstance(value, str) else str(value)


def _from_contents(
    name: str, datatype: str, shape: tuple[int, ...], contents: oip.InferTensorContents
) -> Array:
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


def _shape(name: str, dims: tuple[int, ...], max_elements: int) -> tuple[int, ...]:
    """Protobuf dims are ints already: the common case costs one product; anything
    unusual goes to check_shape, which raises the shared message."""
    if len(dims) <= _MAX_RANK and (not dims or min(dims) >= 0) and math.prod(dims) <= max_elements:
        return dims
    return check_shape(name, list(dims), max_elements)


def decode_request(
    pb: oip.ModelInferRequest, max_elements: int, known_names: set[str] | None = None
) -> InferenceRequest:
    """ModelInferRequest -> InferenceRequest; InvalidInput names the tensor and the problem.

    ``known_names`` (the caller's, kept across calls) remembers model names that passed
    ``check_model_name``, so a name seen before skips the pattern match."""
    model = pb.model_name
    if known_names is None or model not in known_names:
        check_model_name(model)
        if known_names is not None and len(known_names) < _KNOWN_NAMES_MAX:
            known_names.add(model)
    version = pb.model_version or None
    if version is not None:
        check_version_name(version)
    tensors = pb.inputs
    if not tensors:
        raise InvalidInput("'inputs' must be a non-empty list of tensors")
    raw = pb.raw_input_contents
    if raw and len(raw) != len(tensors):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries for {len(tensors)} inputs; give one per input"
        )
    inputs: list[Tensor] = []
    for i, tensor in enumerate(tensors):
        name, datatype = tensor.name, tensor.datatype
        shape = _shape(name, tuple(tensor.shape), max_elements)
        if raw:
            if tensor.HasField("contents"):
                raise InvalidInput(f"input '{name}': use either contents or raw_input_contents, not both")
            array = from_raw(name, datatype, shape, raw[i])
        else:
            array = _from_contents(name, datatype, shape, tensor.contents)
        params = tensor.parameters
        inputs.append(Tensor(name, datatype, shape, array, params_from_pb(params) if params else None))
    outputs = pb.outputs
    params = pb.parameters
    return InferenceRequest(
        model,
        version,
        inputs,
        pb.id or None,
        [RequestedOutput(o.name, params_from_pb(o.parameters)) for o in outputs] if outputs else None,
        params_from_pb(params) if params else None,
    )


def encode_response(response: InferenceResponse, raw: bool) -> oip.ModelInferResponse:
    """InferenceResponse -> ModelInferResponse, raw_output_contents when ``raw`` (or FP16)."""
    out = oip.ModelInferResponse(
        model_name=response.model, model_version=response.version, id=response.id or ""
    )
    if response.parameters:
        params_to_pb(out.parameters, response.parameters)
    tensors = response.outputs
    add = out.outputs.add
    # raw_output_contents is all-or-nothing, and FP16 can only travel raw.
    if raw or any(t.datatype not in CONTENTS_FIELD for t in tensors):
        contents = []
        for tensor in tensors:
            entry = add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
            if tensor.parameters:
                params_to_pb(entry.parameters, tensor.parameters)
            contents.append(to_raw(tensor.datatype, tensor.data))
        out.raw_output_contents.extend(contents)
        return out
    for tensor in tensors:
        entry = add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        if tensor.parameters:
            params_to_pb(entry.parameters, tensor.parameters)
        if tensor.datatype == "BYTES":
            entry.contents.bytes_contents.extend(
                v if isinstance(v, bytes) else str(v).encode() for v in tensor.data.ravel()
            )
        else:
            getattr(entry.contents, CONTENTS_FIELD[tensor.datatype]).extend(tensor.data.ravel().tolist())
    return out

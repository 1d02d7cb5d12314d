"""Checks a decoded request against the model's declared signature before any compute."""

from __future__ import annotations

from serving.errors import InvalidInput
from serving.inference import Array, InferenceRequest
from serving.modelconfig import ModelConfig


def validate_inputs(config: ModelConfig, request: InferenceRequest) -> dict[str, Array]:
    """Returns the inputs keyed by name; raises InvalidInput naming the first problem."""
    specs = config.inputs
    inputs: dict[str, Array] = {}
    for tensor in request.inputs:
        if tensor.name in inputs:
            raise InvalidInput(f"input '{tensor.name}' is given twice")
        inputs[tensor.name] = tensor.data
    if len(inputs) != len(specs) or any(spec.name not in inputs for spec in specs):
        expected = [s.name for s in specs]
        missing = [n for n in expected if n not in inputs]
        extra = [n for n in inputs if n not in expected]
        parts = []
        if missing:
            parts.append(f"missing inputs {missing}")
        if extra:
            parts.append(f"unexpected inputs {extra}")
        raise InvalidInput(f"model '{request.model}' takes inputs {expected}: " + ", ".join(parts))
    batch = -1
    for tensor in request.inputs:
        spec = next(s for s in specs if s.name == tensor.name)
        if tensor.datatype != spec.datatype:
            raise InvalidInput(f"input '{tensor.name}' must be {spec.datatype}, got {tensor.datatype}")
        shape = tensor.data.shape
        if len(shape) != len(spec.shape) or any(
            want != -1 and got != want for got, want in zip(shape[1:], spec.shape[1:], strict=False)
        ):
            raise InvalidInput(
                f"input '{tensor.name}' has shape {list(shape)}, model expects {list(spec.shape)}"
            )
        rows = shape[0]
        if rows < 1:
            raise InvalidInput(f"input '{tensor.name}' has an empty batch (shape {list(shape)})")
        if rows > config.max_batch_size:
            raise InvalidInput(
                f"input '{tensor.name}' has {rows} rows; model '{request.model}' takes at most "
                f"{config.max_batch_size} per request"
            )
        if batch == -1:
            batch = rows
        elif rows != batch:
            raise InvalidInput(f"inputs disagree on the batch size ({batch} vs {rows} for '{tensor.name}')")
    if request.outputs:
        declared = {s.name for s in config.outputs}
        for wanted in request.outputs:
            if wanted.name not in declared:
                raise InvalidInput(
                    f"unknown output '{wanted.name}' requested; model '{request.model}' gives {sorted(declared)}"
                )
    return inputs

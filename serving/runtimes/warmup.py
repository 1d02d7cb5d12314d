"""Warmup requests a version runs at load, before it is READY.

First calls pay for lazy allocation, kernel selection and cold caches; running them at load
keeps that cost off the first callers, and a version that cannot answer a well-formed
request fails to load (with the reason) instead of failing its first callers.
Inputs come from the config's ``warmup.inputs`` (sample rows, tiled to each batch size) or
are generated from the signature (zeros, and ``b"0"`` for BYTES: a string that parses as a
number and is valid text, so a model that casts strings to numbers accepts it; -1
dimensions after the batch become 1).

Generated inputs are a guess: a model may refuse them (a graph that parses its strings in a
format of its own, a value range check). That is not the model's fault, so the runtime's
error then ends the warm-up with ``GeneratedWarmupRefused`` and the repository logs a
warning and serves the version. Inputs the user configured must work: their failure fails
the version.
"""

from __future__ import annotations

import numpy as np

from serving.datatypes import numpy_dtype
from serving.inference import Array
from serving.modelconfig import ModelConfig, TensorSpec
from serving.runtimes.base import Runtime


class GeneratedWarmupRefused(Exception):
    """The runtime refused inputs generated from the signature (none configured): the
    version is served without (complete) warm-up."""


class WarmupConfigError(ValueError):
    """The config's warmup section does not fit the model: its own words, safe to show anyone
    (a fault inside the runtime is any other exception, and its text stays in the log)."""


def _generated(spec: TensorSpec, rows: int) -> Array:
    shape = (rows, *(1 if d == -1 else d for d in spec.shape[1:]))
    if spec.datatype == "BYTES":
        return np.full(shape, b"0", dtype=object)
    return np.zeros(shape, dtype=numpy_dtype(spec.datatype))


def _from_sample(spec: TensorSpec, sample: list[object], rows: int) -> Array:
    dtype = object if spec.datatype == "BYTES" else numpy_dtype(spec.datatype)
    try:
        array = np.asarray(sample, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise WarmupConfigError(f"warmup.inputs.{spec.name}: not {spec.datatype} rows ({exc})") from None
    if array.ndim == len(spec.shape) - 1:
        array = array[np.newaxis]
    if array.ndim != len(spec.shape) or array.shape[0] == 0:
        raise WarmupConfigError(f"warmup.inputs.{spec.name}: expected rows of shape {list(spec.shape[1:])}")
    for got, want in zip(array.shape[1:], spec.shape[1:], strict=True):
        if want != -1 and got != want:
            raise WarmupConfigError(
                f"warmup.inputs.{spec.name}: shape {list(array.shape)} does not fit {list(spec.shape)}"
            )
    repeats = -(-rows // array.shape[0])
    return np.ascontiguousarray(np.concatenate([array] * repeats)[:rows])


def warmup_inputs(config: ModelConfig, rows: int) -> dict[str, Array]:
    samples = config.warmup.inputs or {}
    unknown = set(samples) - {s.name for s in config.inputs}
    if unknown:
        raise WarmupConfigError(f"warmup.inputs: {sorted(unknown)} are not inputs of the model")
    return {
        spec.name: _from_sample(spec, samples[spec.name], rows)
        if spec.name in samples
        else _generated(spec, rows)
        for spec in config.inputs
    }


def run_warmup(runtime: Runtime, config: ModelConfig) -> int:
    """Run the configured warmup requests; returns how many ran. Raises on any failure;
    ``GeneratedWarmupRefused`` when the runtime refused generated inputs."""
    if not config.warmup.enabled:
        return 0
    generated = not config.warmup.inputs
    count = 0
    for rows in config.warmup.batch_sizes:
        inputs = warmup_inputs(config, min(rows, config.max_batch_size))
        for _ in range(config.warmup.repeat):
            try:
                outputs = runtime.predict(inputs)
            except Exception as exc:
                if not generated:
                    raise
                detail = (str(exc).strip().splitlines() or [""])[0][:300]
                raise GeneratedWarmupRefused(f"{type(exc).__name__}: {detail}") from exc
            missing = [s.name for s in config.outputs if s.name not in outputs]
            if missing:
                raise WarmupConfigError(f"the runtime returned no {missing}")
            count += 1
    return count

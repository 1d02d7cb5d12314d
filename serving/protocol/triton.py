"""A model's config.yaml as Triton's model configuration (the ``model_configuration``
extension), shared by both adapters: REST answers this dict as JSON (Triton's spelling:
field names as in model_config.proto, enums by name, integers as numbers), gRPC parses the
same dict into its ``ModelConfig`` message. Read-only: the config.yaml is the source.

The mapping:
- ``platform``/``backend``: ``onnxruntime_onnx``/``onnxruntime`` as Triton names ONNX models;
  the native boosters under their framework's name;
- ``max_batch_size``: the config's (every model here has a batch dimension), so ``dims``
  leave it out, as Triton's do; ``-1`` stays "any size";
- ``TYPE_*`` data types (``BYTES`` is Triton's ``TYPE_STRING``);
- ``dynamic_batching`` when batching is enabled (queue delay, preferred sizes);
- ``version_policy``: ``latest``/``all``/``specific`` as in the config.
"""

from __future__ import annotations

from typing import Any

from serving import platforms
from serving.modelconfig import ModelConfig, TensorSpec


def triton_datatype(datatype: str) -> str:
    """``FP32`` -> ``TYPE_FP32``; ``BYTES`` -> ``TYPE_STRING``."""
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def _tensor(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "data_type": triton_datatype(spec.datatype), "dims": list(spec.shape[1:])}


def _version_policy(config: ModelConfig) -> dict[str, Any]:
    policy = config.version_policy
    if policy.all:
        return {"all": {}}
    if policy.specific is not None:
        return {"specific": {"versions": list(policy.specific)}}
    return {"latest": {"num_versions": policy.latest or 1}}


def model_config(name: str, config: ModelConfig) -> dict[str, Any]:
    """Triton's ``ModelConfig`` for one model, as a dict (see the module docstring)."""
    found: dict[str, Any] = {
        "name": name,
        "platform": platforms.get(config.platform).oip_platform,
        "backend": platforms.get(config.platform).triton_backend,
        "version_policy": _version_policy(config),
        "max_batch_size": config.max_batch_size,
        "input": [_tensor(s) for s in config.inputs],
        "output": [_tensor(s) for s in config.outputs],
    }
    batching = config.batching
    if batching.enabled:
        found["dynamic_batching"] = {
            "preferred_batch_size": list(batching.preferred_batch_sizes),
            "max_queue_delay_microseconds": batching.max_queue_delay_us,
        }
        if batching.max_batch_size is not None:
            # Triton has one max_batch_size; ours may cap batches below what a request may hold.
            found["parameters"] = {"batching_max_batch_size": {"string_value": str(batching.max_batch_size)}}
    return found

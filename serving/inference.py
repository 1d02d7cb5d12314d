"""The one internal request/response type. Numpy-backed; knows no wire format.

Protocol adapters (REST JSON, REST binary, gRPC, KServe v1) decode into these and encode
out of them; the dataplane, router, batcher and runtimes only ever see these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy.typing as npt

from serving.labels import Edge

if TYPE_CHECKING:  # the SDK is imported only when tracing is on
    from serving.observability.tracing import RequestTrace

Array = npt.NDArray[Any]
Parameters = dict[str, Any]


@dataclass(slots=True)
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Array
    parameters: Parameters | None = None


@dataclass(slots=True)
class RequestedOutput:
    name: str
    parameters: Parameters | None = None


@dataclass(slots=True)
class InferenceRequest:
    model: str
    version: str | None
    inputs: list[Tensor]
    id: str | None = None
    outputs: list[RequestedOutput] | None = None
    parameters: Parameters | None = None
    edge: Edge | None = None
    """The adapter that decoded it: labels for work done on its behalf (shadow copies)."""
    routing_key: str | None = None
    """Sticky-routing key (header ``x-routing-key`` or parameter ``routing_key``)."""
    deadline: float | None = None
    """Absolute ``time.monotonic()`` after which the caller no longer wants an answer."""
    served_version: str | None = None
    """Set by the dataplane once it chose a version, so a request that fails afterwards is
    still counted under that version and variant."""
    variant: str = "stable"
    trace: RequestTrace | None = None
    """The sampled request's trace (serving.observability.tracing); None when tracing is off
    or the sampler dropped it, so each stage pays one ``is None`` test."""


@dataclass(slots=True)
class InferenceResponse:
    model: str
    version: str
    outputs: list[Tensor]
    id: str | None = None
    parameters: Parameters | None = field(default=None)
    variant: str = "stable"
    """Which traffic variant answered (stable or canary, see serving/router): REST sends it
    as the ``x-model-variant`` header."""


def batch_rows(inputs: dict[str, Array]) -> int:
    """Rows in a validated input set (every input shares the batch dimension)."""
    for array in inputs.values():
        return int(array.shape[0]) if array.ndim else 1
    return 0

"""Counting at the edge: each adapter records every inference request it receives, once.

``serving_requests_total`` and its duration histogram, and the access log line, are written
here, by the adapter that received the request, whatever happened to it: a body that is not
JSON, an unknown model, 413/415, overload, a deadline, a runtime fault, a client that went
away. Labels:

- ``model``: the name when the server serves it, else ``UNKNOWN_MODEL`` (bounded);
- ``version``/``variant``: the version that answered (or was chosen before the request
  failed), else ``none``/``stable``;
- ``outcome``: the adapter's ``Edge`` spelling of the error table entry.

The duration covers decode, dataplane and encode: the time the request spent in the adapter.

The same two calls end the request's trace span with the outcome counted here and hand
sampled payloads to the payload logger (serving.observability): each costs one ``is None``
test when off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from serving.core.dataplane import DataPlane
from serving.errors import ServingError
from serving.inference import InferenceRequest, InferenceResponse
from serving.labels import NO_VERSION, UNKNOWN_MODEL, Edge, as_serving_error

if TYPE_CHECKING:
    from serving.observability.tracing import RequestTrace


def _http_class(error: ServingError) -> str:
    return f"{error.http_status // 100}xx"


def _grpc_code(error: ServingError) -> str:
    return error.grpc_code


REST = Edge("rest", ok="2xx", of_error=_http_class)
"""REST: the status class (a client that hung up is 4xx: nginx's 499)."""

GRPC = Edge("grpc", ok="OK", of_error=_grpc_code)
"""gRPC: the status code name."""


class EdgeRecorder:
    """Records finished inference requests for one adapter (see the module docstring)."""

    def __init__(self, edge: Edge, dataplane: DataPlane) -> None:
        self.edge = edge
        self._dataplane = dataplane
        self._observe = dataplane.metrics.observe_request
        self._access_log = dataplane.access_log
        self._payloads = dataplane.payloads

    def success(self, request: InferenceRequest, response: InferenceResponse, seconds: float) -> None:
        """The hot path: a request answered by ``response.version``."""
        self._observe(
            response.model, response.version, response.variant, self.edge.protocol, self.edge.ok, seconds
        )
        if request.trace is not None:
            request.trace.finish(
                response.model, response.version, response.variant, _rows(request), self.edge.ok
            )
        if self._payloads is not None:
            self._payloads.offer(request, response, seconds, self.edge.protocol)
        if self._access_log is not None:
            self._access_log.record(
                request.id,
                response.model,
                response.version,
                response.variant,
                self.edge.protocol,
                self.edge.ok,
                seconds,
            )

    def failure(
        self,
        model: str,
        request: InferenceRequest | None,
        error: BaseException,
        seconds: float,
        trace: RequestTrace | None = None,
    ) -> None:
        """A request that ended in ``error``; ``request`` is None when it never decoded (then
        ``trace`` is its span, if sampled)."""
        served = self._dataplane.knows(model)
        label = model if served else UNKNOWN_MODEL
        version, variant = NO_VERSION, "stable"
        if request is not None and request.served_version is not None:
            version, variant = request.served_version, request.variant
        failed = as_serving_error(error)
        outcome = self.edge.of_error(failed)
        self._observe(label, version, variant, self.edge.protocol, outcome, seconds)
        if request is not None and request.trace is not None:
            trace = request.trace
        if trace is not None:
            trace.finish(label, version, variant, _rows(request), outcome, error)
        if self._access_log is not None:
            self._access_log.record(
                request.id if request is not None else None,
                model[:128],
                version,
                variant,
                self.edge.protocol,
                outcome,
                seconds,
                failed,
            )


def _rows(request: InferenceRequest | None) -> int | None:
    if request is None or not request.inputs:
        return None
    shape = request.inputs[0].shape
    return int(shape[0]) if shape else 1

"""OpenTelemetry tracing of inference requests (``SERVING_TRACING=true``; docs/observability.md).

Imported only when tracing is on, so the OpenTelemetry SDK is never loaded otherwise; the
hot path then pays one ``is None`` test per stage. With it on:

- the adapter extracts W3C ``traceparent``/``tracestate`` (and baggage: the propagators
  ``OTEL_PROPAGATORS`` names) from the REST headers or the gRPC metadata, and starts one
  SERVER span per inference request, ``"<protocol> infer <model>"``, as a child of the
  caller's span;
- the sampler is the SDK's, from ``OTEL_TRACES_SAMPLER``/``_ARG`` (default
  ``parentbased_always_on``): a caller's sampled flag is honoured; an unsampled request gets
  no ``RequestTrace`` at all, so it costs the extraction and the sampling decision only;
- child spans are recorded after the fact with explicit timestamps (no context switches,
  no contextvars): ``decode``, ``routing``, ``queue wait``, ``compute``, ``encode``. With
  dynamic batching one ``compute`` span covers a batch: it is a child of the first traced
  request in it and links to every other one, and each request's ``queue wait`` span links
  to it. Shadow copies are ``shadow <model>`` spans in the primary's trace, linked to it;
- spans go through a BatchSpanProcessor to the OTLP exporter (HTTP/protobuf; ``grpc`` when
  ``opentelemetry-exporter-otlp-proto-grpc`` is installed), configured by the standard
  ``OTEL_EXPORTER_OTLP_*`` variables; the resource by ``OTEL_SERVICE_NAME`` and
  ``OTEL_RESOURCE_ATTRIBUTES`` (service name ``serving`` when neither names one).

Attributes follow OpenTelemetry's semantic conventions where they exist (``http.*``,
``rpc.*``, ``error.type``); the model's own are ``serving.model``, ``serving.model.version``,
``serving.variant``, ``serving.rows``, ``serving.outcome``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry import propagate
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer, set_span_in_context

from serving import __version__
from serving.errors import ServingError
from serving.labels import as_serving_error

# gRPC status codes by name (grpc.StatusCode values), for ``rpc.grpc.status_code``.
GRPC_CODES = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5, "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9, "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12,
    "INTERNAL": 13, "UNAVAILABLE": 14, "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}  # fmt: skip
# The codes a gRPC server span marks as an error (semantic conventions for RPC servers).
_GRPC_SERVER_ERRORS = {
    "UNKNOWN",
    "DEADLINE_EXCEEDED",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
}
_OTLP_PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")


def otlp_exporter() -> SpanExporter:
    """The OTLP span exporter the standard environment variables ask for."""
    protocol = next((os.environ[v] for v in _OTLP_PROTOCOLS if os.environ.get(v)), "http/protobuf")
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError:
            raise ValueError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs opentelemetry-exporter-otlp-proto-grpc, which "
                "the image does not ship; use http/protobuf (the collector's port 4318)"
            ) from None
        exporter: SpanExporter = GrpcExporter()
        return exporter
    raise ValueError(f"OTLP protocol '{protocol}' is not supported for traces; use http/protobuf or grpc")


def resource() -> Resource:
    """The SDK's resource from OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES; ``serving`` when
    neither names the service."""
    found = Resource.create({SERVICE_VERSION: __version__})
    if str(found.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        found = found.merge(Resource({SERVICE_NAME: "serving"}))
    return found


class Tracing:
    """The tracer provider of one server process (built by ``serving.server.build``)."""

    def __init__(self, processor: SpanProcessor | None = None) -> None:
        self.provider = TracerProvider(resource=resource())  # sampler: OTEL_TRACES_SAMPLER
        self.provider.add_span_processor(processor or BatchSpanProcessor(otlp_exporter()))
        self.tracer: Tracer = self.provider.get_tracer("serving", __version__)
        self._propagator = propagate.get_global_textmap()

    def begin(
        self, protocol: str, model: str, carrier: Mapping[str, str], attributes: dict[str, Any]
    ) -> RequestTrace | None:
        """The request's SERVER span, continuing the caller's trace from ``carrier``; None
        when the sampler drops it (nothing more is recorded for the request)."""
        start = time.time_ns()
        parent = self._propagator.extract(carrier)
        span = self.tracer.start_span(
            f"{protocol} infer {model}", parent, SpanKind.SERVER, attributes, start_time=start
        )
        if not span.is_recording():
            return None
        return RequestTrace(self.tracer, span, protocol, start)

    def shutdown(self) -> None:
        """Export what is buffered (at most the processor's export timeout) and stop."""
        self.provider.shutdown()


class RequestTrace:
    """One sampled request's server span and the children its stages record."""

    __slots__ = ("context", "protocol", "span", "started", "tracer")

    def __init__(self, tracer: Tracer, span: Span, protocol: str, started: int) -> None:
        self.tracer = tracer
        self.span = span
        self.protocol = protocol
        self.started = started
        """When the server span started (ns since the epoch): where ``decode`` starts."""
        self.context = set_span_in_context(span)

    def child(
        self,
        name: str,
        start_ns: int,
        end_ns: int | None = None,
        attributes: dict[str, Any] | None = None,
        links: Sequence[Link] = (),
        error: BaseException | None = None,
    ) -> Span:
        """A finished child span from ``start_ns`` to ``end_ns`` (now when None)."""
        span = self.tracer.start_span(name, self.context, SpanKind.INTERNAL, attributes, links, start_ns)
        if error is not None:
            _error(span, as_serving_error(error))
        span.end(end_ns)
        return span

    def link(self) -> Link:
        return Link(self.span.get_span_context())

    def finish(
        self,
        model: str,
        version: str,
        variant: str,
        rows: int | None,
        outcome: str,
        error: BaseException | None = None,
    ) -> None:
        """End the server span with the outcome the edge counted."""
        span = self.span
        span.update_name(f"{self.protocol} infer {model}")
        span.set_attribute("serving.model", model)
        span.set_attribute("serving.model.version", version)
        span.set_attribute("serving.variant", variant)
        span.set_attribute("serving.outcome", outcome)
        if rows is not None:
            span.set_attribute("serving.rows", rows)
        failed = as_serving_error(error) if error is not None else None
        if self.protocol == "grpc":
            span.set_attribute("rpc.grpc.status_code", GRPC_CODES.get(outcome, 2))
        else:
            span.set_attribute("http.response.status_code", 200 if failed is None else failed.http_status)
        if failed is not None:
            span.set_attribute("error.type", type(error).__name__)
            server_fault = (
                outcome in _GRPC_SERVER_ERRORS if self.protocol == "grpc" else failed.http_status >= 500
            )
            if server_fault:
                span.set_status(Status(StatusCode.ERROR, failed.message[:256]))
        span.end()


def record_batch(
    traced: Sequence[tuple[RequestTrace, int]],
    started_ns: int,
    ended_ns: int,
    rows: int,
    requests: int,
    error: BaseException | None,
) -> None:
    """One ``compute`` span for a batch of ``requests`` (``traced``: the sampled ones, with
    the time each joined the queue): a child of the first, linked to the others; each
    sampled request's ``queue wait`` span links to it."""
    first = traced[0][0]
    compute = first.child(
        "compute",
        started_ns,
        ended_ns,
        {"serving.scoring.rows": rows, "serving.scoring.requests": requests},
        [trace.link() for trace, _ in traced[1:]],
        error,
    )
    link = [Link(compute.get_span_context())]
    for trace, enqueued_ns in traced:
        trace.child("queue wait", enqueued_ns, started_ns, links=link)


def _error(span: Span, error: ServingError) -> None:
    span.set_attribute("error.type", type(error).__name__)
    span.set_status(Status(StatusCode.ERROR, error.message[:256]))


def header_carrier(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """ASGI headers as the str mapping the propagators read (names are lower case already)."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}


def metadata_carrier(metadata: Iterable[tuple[str, Any]] | None) -> dict[str, str]:
    """gRPC invocation metadata (binary ``-bin`` values skipped) as a str mapping."""
    return {k: v for k, v in metadata or () if isinstance(v, str)}

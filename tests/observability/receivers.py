"""Real receivers for the observability tests: an OTLP/HTTP trace receiver that decodes with
``opentelemetry-proto``, and an HTTP CloudEvents sink that parses with the ``cloudevents`` SDK."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cloudevents.http import CloudEvent, from_http
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.waiting import wait_until


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind is not None else None


@dataclass
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    attributes: dict[str, Any]
    links: list[tuple[str, str]]
    status_code: int
    trace_state: str
    start: int
    end: int
    resource: dict[str, Any]


@dataclass
class Received:
    """What a receiver got, shared with its handler thread."""

    spans: list[ReceivedSpan] = field(default_factory=list)
    events: list[CloudEvent] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)

    def wait_for(self, predicate: Callable[[Received], bool], timeout: float = 15.0) -> None:
        def holds() -> bool:
            with self.lock:
                return predicate(self)

        wait_until(
            holds, timeout, 0.05, lambda: f"not received: {len(self.spans)} spans, {len(self.events)} events"
        )

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]


class _OtlpHandler(BaseHTTPRequestHandler):
    received: Received

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path != "/v1/traces" or self.headers.get("content-type") != "application/x-protobuf":
            self.send_response(404)
            self.end_headers()
            return
        export = ExportTraceServiceRequest.FromString(body)
        spans = []
        for resource_spans in export.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(
                        ReceivedSpan(
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            kind=span.kind,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            links=[(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
                            status_code=span.status.code,
                            trace_state=span.trace_state,
                            start=span.start_time_unix_nano,
                            end=span.end_time_unix_nano,
                            resource=resource,
                        )
                    )
        with self.received.lock:
            self.received.spans.extend(spans)
        out = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _SinkHandler(BaseHTTPRequestHandler):
    received: Received
    delay: float = 0.0
    protocol_version = "HTTP/1.1"  # keep-alive, as a broker would

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.delay:
            time.sleep(self.delay)  # deliberate: a slow sink, so events pile up in the sender
        event = from_http(dict(self.headers.items()), body)
        with self.received.lock:
            self.received.events.append(event)
        self.send_response(202)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def _serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[tuple[str, Received]]:
    received = Received()
    bound = type("Handler", (handler,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), bound)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def otlp_receiver() -> Iterator[tuple[str, Received]]:
    """(endpoint for OTEL_EXPORTER_OTLP_ENDPOINT, what arrived)."""
    with _serve(_OtlpHandler) as served:
        yield served


@contextmanager
def cloudevents_sink(delay: float = 0.0) -> Iterator[tuple[str, Received]]:
    """(URL to POST CloudEvents to, what arrived); ``delay`` seconds per event (a slow sink)."""
    handler = type("SlowSink", (_SinkHandler,), {"delay": delay})
    with _serve(handler) as served:
        yield served

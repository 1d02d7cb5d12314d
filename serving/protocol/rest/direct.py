"""The REST inference routes answered in the HTTP protocol itself, below ASGI.

uvicorn turns each request into an ASGI scope, a request/response cycle with an event, a task
running the app, ``receive`` and ``send`` messages, and header checks on the way out; for a
one-row inference request that plumbing costs more than the model. ``DirectProtocol`` is the
REST listener's protocol (uvicorn's httptools protocol with the read timeouts of
serving.protocol.rest.timeouts): when a request's headers are complete and its path is an
inference route, it takes the request itself. An ``InferExchange`` stands in uvicorn's cycle
on the connection, collects the body from httptools' callbacks, and once the body is whole a
task runs serving.protocol.rest.inference (the same checks, errors and counting as the ASGI
path) and writes the response with one ``transport.write``. Every other path goes to uvicorn's
ASGI cycle and the app, on the same port and connection.

What the ASGI path does holds here too, with the connection state uvicorn keeps: keep-alive
and ``Connection: close``, HTTP/1.0, pipelined requests answered in order (an exchange queues
in uvicorn's pipeline like a cycle), chunked bodies (httptools de-chunks them), ``Expect:
100-continue`` (the interim answer is written once the head passed its checks), the header and
body timeouts, paused writes towards a slow reader, drain (uvicorn's ``shutdown`` reads the
exchange's ``response_complete`` and ``keep_alive``; its task is one of the server's tasks, so
the graceful wait and the final cancellation cover it) and a client that hangs up mid-body
(counted as 499, like the ASGI path's ``http.disconnect``).

It uses uvicorn's protocol internals (the parser callbacks, ``cycle``, ``pipeline``,
``flow``, ``server_state``): pyproject bounds uvicorn to the minor version it was built on,
and ``direct_protocol`` checks the installed one at start, falling back to the ASGI path with
a warning when it differs. tests/protocol/rest run the REST tests on both paths.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from importlib import metadata
from typing import TYPE_CHECKING, Any

import httptools
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from serving.errors import ClientClosedRequest, ServingError
from serving.protocol.rest.inference import RestInference, Target, parse_infer_path
from serving.protocol.rest.timeouts import TimedHttpToolsProtocol, timed_protocol

if TYPE_CHECKING:
    from serving.observability.tracing import RequestTrace

log = logging.getLogger("serving.rest")

_ROUTES = (b"/v2/models/", b"/v1/models/")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_DIRECT_KINDS = ("v2", "v1")
_ROUTES_KEPT = 1024

UVICORN_BUILT_ON = ((0, 54), (0, 55))
"""uvicorn versions (from, below) whose protocol internals this module was written and tested on."""

_UVICORN_SEAMS = (
    "on_message_begin",
    "on_url",
    "on_header",
    "on_headers_complete",
    "on_body",
    "on_message_complete",
    "on_response_complete",
    "_start_asgi_task",
    "connection_lost",
    "shutdown",
)


class InferExchange:
    """One inference request on a connection, in the place of uvicorn's request/response
    cycle (``response_complete``, ``keep_alive``, ``disconnected`` and ``message_event.set``
    are what uvicorn's protocol reads of a cycle)."""

    __slots__ = (
        "arrived",
        "body_complete",
        "chunks",
        "disconnected",
        "error",
        "expect_100",
        "headers",
        "keep_alive",
        "method",
        "path",
        "protocol",
        "response_complete",
        "running",
        "size",
        "start",
        "started",
        "target",
        "trace",
    )

    def __init__(
        self,
        protocol: DirectProtocol,
        target: Target,
        method: str,
        path: str,
        headers: dict[bytes, bytes],
        keep_alive: bool,
        expect_100: bool,
        trace: RequestTrace | None,
        start: float,
    ) -> None:
        self.protocol = protocol
        self.target = target
        self.method = method
        self.path = path
        self.headers = headers
        self.keep_alive = keep_alive
        self.expect_100 = expect_100
        self.trace = trace
        self.start = start
        self.arrived = time.monotonic()
        self.chunks: list[bytes] = []
        self.size = 0
        self.body_complete = False
        self.started = False  # its turn on the connection came (not queued behind another)
        self.running = False  # the body is whole and its task runs
        self.error: ServingError | None = None
        self.disconnected = False
        self.response_complete = False

    @property
    def message_event(self) -> InferExchange:
        return self  # uvicorn's connection_lost calls ``cycle.message_event.set()``

    def set(self) -> None:
        """The connection was lost (uvicorn set ``disconnected`` first when it mattered)."""
        if self.started and not self.running and not self.response_complete:
            # The body never came: the ASGI path's http.disconnect, counted the same.
            self.response_complete = True
            self.protocol.inference.fail(
                self.target,
                None,
                ClientClosedRequest("client disconnected before sending the whole body"),
                self.start,
                self.trace,
            )

    def begin(self) -> None:
        """Its turn: check the head, then wait for the body (or run at once if it is here)."""
        self.started = True
        inference = self.protocol.inference
        try:
            inference.check_head(self.method, self.path, self.target, self.headers)
        except Exception as exc:
            self.answer(*inference.fail(self.target, None, exc, self.start, self.trace))
            return
        if self.error is not None:
            self.failed(self.error)
        elif self.body_complete:
            self.run()
        elif self.expect_100 and not self.protocol.transport.is_closing():
            self.protocol.transport.write(_CONTINUE)

    def body(self, chunk: bytes) -> None:
        if self.response_complete or self.error is not None:
            return
        self.size += len(chunk)
        try:
            self.protocol.inference.check_size(self.size)
        except ServingError as exc:
            self.chunks.clear()
            self.error = exc
            if self.started:
                self.failed(exc)
            return
        self.chunks.append(chunk)

    def complete(self) -> None:
        if self.response_complete or self.error is not None:
            return
        self.body_complete = True
        if self.started:
            self.run()

    def failed(self, exc: ServingError) -> None:
        self.answer(*self.protocol.inference.fail(self.target, None, exc, self.start, self.trace))

    def run(self) -> None:
        self.running = True
        chunks = self.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.chunks = []
        protocol = self.protocol
        task = protocol.loop.create_task(self.serve(body))
        task.add_done_callback(protocol.tasks.discard)
        protocol.tasks.add(task)

    async def serve(self, body: bytes) -> None:
        try:
            status, out, headers = await self.protocol.inference.serve(
                self.target, self.headers, body, self.arrived, self.start, self.trace
            )
            flow = self.protocol.flow
            if flow.write_paused and not self.disconnected:
                await flow.drain()  # a client that does not read: wait, as uvicorn's send does
            self.answer(status, out, headers)
        except asyncio.CancelledError:  # drain's grace ran out (counted by serve)
            self.response_complete = True
            self.protocol.transport.close()
            raise
        except Exception:  # pragma: no cover - serve answers every error; this is a bug
            log.exception("unexpected error answering %s", self.path)
            self.response_complete = True
            self.protocol.transport.close()

    def answer(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        """The whole response in one write; then the connection's next request or keep-alive."""
        self.response_complete = True
        protocol = self.protocol
        transport = protocol.transport
        if self.disconnected or transport.is_closing():
            return
        content = [STATUS_LINE[status]]
        for name, value in protocol.server_state.default_headers:
            content.extend((name, b": ", value, b"\r\n"))
        for name, value in headers:
            content.extend((name, b": ", value, b"\r\n"))
        if not self.keep_alive:
            content.append(b"connection: close\r\n")
        content.extend((b"content-length: ", str(len(body)).encode(), b"\r\n\r\n"))
        if self.method != "HEAD":
            content.append(body)
        transport.write(b"".join(content))
        if not self.keep_alive:
            transport.close()
        protocol.on_response_complete()


def _direct_route(url: bytes) -> tuple[str, Target] | None:
    """The decoded path and inference target of a request URL, or None when the path is not
    one this protocol answers."""
    path = httptools.parse_url(url).path.decode("ascii")
    if "%" in path:
        path = urllib.parse.unquote(path)
    target = parse_infer_path(path)
    if target is None or target.kind not in _DIRECT_KINDS:
        return None
    return path, target


class DirectProtocol(TimedHttpToolsProtocol):
    """The REST listener's protocol with the inference routes answered in it (see the module
    docstring); ``inference`` and ``routes`` are set on the class ``direct_protocol`` builds."""

    inference: RestInference
    routes: dict[bytes, tuple[str, Target] | None]
    """URLs already parsed, shared by the listener's connections: callers send the same few
    URLs over and over, and parsing one cost about 2 µs of a request."""

    def on_headers_complete(self) -> None:
        url: bytes = self.url
        if not url.startswith(_ROUTES) or self.parser.should_upgrade():
            super().on_headers_complete()
            return
        routes = self.routes
        try:
            found = routes[url]
        except KeyError:
            found = _direct_route(url)
            if len(routes) >= _ROUTES_KEPT:  # a client sending endless distinct URLs
                routes.clear()
            routes[url] = found
        if found is None:  # explain, or not an inference route: through ASGI
            super().on_headers_complete()
            return
        path, target = found
        start = time.perf_counter()
        parser = self.parser
        method = parser.get_method().decode("ascii")
        http_version = parser.get_http_version()
        trace = None
        if self.inference.tracing is not None:
            scheme = self.scheme or "http"
            trace = self.inference.begin_trace(method, path, scheme, http_version, self.headers, target)
        exchange = InferExchange(
            self,
            target,
            method,
            path,
            dict(self.headers),
            http_version != "1.0" and parser.should_keep_alive(),
            self.expect_100_continue,
            trace,
            start,
        )
        existing = self.cycle
        self.cycle = exchange  # type: ignore[assignment]
        self._arm(self.body_timeout, "body")
        if existing is None or existing.response_complete:
            exchange.begin()
        else:  # pipelined behind a request still being answered: uvicorn's queue
            self.flow.pause_reading()
            self.pipeline.appendleft((exchange, self.app))  # type: ignore[arg-type]

    def on_body(self, body: bytes) -> None:
        cycle: Any = self.cycle
        if type(cycle) is InferExchange:
            cycle.body(body)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        cycle: Any = self.cycle
        if type(cycle) is InferExchange:
            self._disarm()
            cycle.complete()
        else:
            super().on_message_complete()

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        # uvicorn starts the next pipelined request here once a response is complete.
        if type(cycle) is InferExchange:
            cycle.begin()
        else:
            super()._start_asgi_task(cycle, app)


def uvicorn_mismatch(
    version: str | None = None, protocol: type = httptools_impl.HttpToolsProtocol
) -> str | None:
    """Why the protocol-level path cannot run on this uvicorn (None: it can)."""
    version = version or metadata.version("uvicorn")
    try:
        found = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return f"uvicorn {version} is not a release version"
    low, high = UVICORN_BUILT_ON
    if not low <= found < high:
        return f"uvicorn {version} is not the {low[0]}.{low[1]} it was built on"
    missing = [name for name in _UVICORN_SEAMS if not callable(getattr(protocol, name, None))]
    if missing:
        return f"uvicorn {version}'s HTTP protocol lacks {', '.join(missing)}"
    return None


def direct_protocol(
    inference: RestInference,
    header_timeout: float,
    body_timeout: float,
    uvicorn_version: str | None = None,
) -> type[TimedHttpToolsProtocol]:
    """The REST listener's protocol class for ``uvicorn.Config(http=...)``: the
    protocol-level inference path, or the ASGI path's (with a warning) when the installed
    uvicorn is not the version it was built on."""
    reason = uvicorn_mismatch(uvicorn_version)
    if reason is not None:
        log.warning("REST inference served through ASGI: %s (the protocol-level path needs it)", reason)
        return timed_protocol(header_timeout, body_timeout)
    return type(
        "DirectProtocol",
        (DirectProtocol,),
        {
            "header_timeout": header_timeout,
            "body_timeout": body_timeout,
            "inference": inference,
            "routes": {},
        },
    )

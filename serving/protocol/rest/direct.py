"""The REST inference routes answered in the HTTP protocol itself, below ASGI.

uvicorn turns each request into an ASGI scope, a request/response cycle with an event, a task
running the app, ``receive`` and ``send`` messages, and header checks on the way out; for a
one-row inference request that plumbing costs more than the model. ``DirectProtocol`` is the
REST listener's protocol (uvicorn's httptools protocol with the read timeouts of
serving.protocol.rest.timeouts): when a request's headers are complete and its path is an
inference route, it takes the request itself. An ``InferExchange`` stands in uvicorn's cycle
on the connection, collects the body from httptools' callbacks, and once the body is whole
runs serving.protocol.rest.inference (the same checks, errors and counting as the ASGI path)
at once, in the read callback: a task takes it over only where it has to wait
(``run_eagerly``). The response is one ``transport.write``; the loop turn's first goes out at
once, later ones together at the end of the turn (``DirectProtocol.send``). Every other path
goes to uvicorn's ASGI cycle and the app, on the same port and connection.

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
import contextvars
import logging
import time
import urllib.parse
from collections.abc import Coroutine, Generator
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
_TASKS_AFTER_A_WAIT = 63

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
    "_unset_keepalive_if_required",
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
            self.protocol.send_now(_CONTINUE)

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
        model = self.target.model
        waits = protocol.waits
        tasks_left = waits.get(model, 0)
        if tasks_left:
            # This model's requests wait (a pool thread, a batch): begun in the read callback and
            # taken over at the wait, they cost 0.87-0.89x the requests a second of a task from
            # the start (the 1,000-tree booster, unbatched at 8 connections and batched at 64).
            waits[model] = tasks_left - 1
            _server_task(protocol.loop.create_task(self.serve(body)), protocol.tasks)
        elif run_eagerly(protocol.loop, self.serve(body), protocol.tasks) is not None:
            waits[model] = _TASKS_AFTER_A_WAIT  # then one eagerly again: it may run inline by then

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
        if self.keep_alive:
            protocol.send(b"".join(content))
        else:
            protocol.send_now(b"".join(content))
            transport.close()
        protocol.on_response_complete()


def _flush(pending: list[tuple[asyncio.Transport, bytes] | None]) -> None:
    """Write the responses ``DirectProtocol.send`` kept, in the order they were answered."""
    batch = pending[:]
    pending.clear()
    for kept in batch:
        if kept is None:
            continue
        transport, data = kept
        if not transport.is_closing():  # else the client left, or the connection timed out, meanwhile
            transport.write(data)


def run_eagerly(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], tasks: set[asyncio.Task[Any]]
) -> asyncio.Task[Any] | None:
    """Run ``coro`` now, up to its first wait; a task (added to ``tasks``) takes it from there.

    What Python 3.12's eager tasks do, for the one coroutine that matters here: a one-row
    request to a model run inline never waits, and is answered without a task or a turn of the
    loop (a task cost about 13 µs of the 113 a request took in-process: creating it, scheduling
    it, its step). The first steps run in a context of their own, as a task's would, and the
    task gets that context. One that waits (a pool thread, a batch, a slow reader) is taken
    over at the future it waits on and from there runs as a task always did: in ``tasks``
    (the server's, so drain waits for it and cancels it). None when it finished."""
    context = contextvars.copy_context()
    try:
        waiting_on = context.run(coro.send, None)
    except StopIteration:
        return None
    except Exception:  # a task would have kept it for a caller; there is none: log it
        log.exception("unexpected error in %s", getattr(coro, "__qualname__", coro))
        return None
    return _server_task(loop.create_task(_Resumed(coro, waiting_on), context=context), tasks)


def _server_task(task: asyncio.Task[Any], tasks: set[asyncio.Task[Any]]) -> asyncio.Task[Any]:
    """``task`` among the server's tasks until it is done (drain waits for them, then cancels)."""
    task.add_done_callback(tasks.discard)
    tasks.add(task)
    return task


_NOTHING = object()


class _Resumed(Coroutine[Any, None, Any]):
    """A coroutine that took its first steps outside a task and now waits on ``waiting_on``
    (what it yielded: a future, or None for a bare yield), as a coroutine a task can take over.
    The task's first ``send`` gets that wait, as if the coroutine had just yielded it; after
    that, ``send`` and ``throw`` go to the coroutine. A ``throw`` before the first ``send`` (the
    task cancelled before it ever ran) reaches the coroutine where it waits, so its handlers
    run (the request is counted), which a wrapping ``async def`` would not do: a coroutine
    that has not started ends at once on a throw."""

    __slots__ = ("_coro", "_waiting_on")

    def __init__(self, coro: Coroutine[Any, Any, Any], waiting_on: Any) -> None:
        self._coro = coro
        self._waiting_on = waiting_on

    def send(self, value: None) -> Any:
        waiting_on = self._waiting_on
        if waiting_on is not _NOTHING:
            self._waiting_on = _NOTHING
            return waiting_on
        return self._coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        self._waiting_on = _NOTHING
        if val is None and tb is None:
            return self._coro.throw(typ)
        return self._coro.throw(typ, val, tb)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, Any]:  # pragma: no cover - tasks drive it with send
        raise TypeError("driven by a task, not awaited")


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
    waits: dict[str, int]
    """Per model, how many requests still run as tasks from the start since one begun in the
    read callback had to wait (``InferExchange.run``)."""
    pending: list[tuple[asyncio.Transport, bytes] | None]
    """Keep-alive responses answered in this turn of the loop, not yet written (see ``send``)."""
    routes: dict[bytes, tuple[str, Target] | None]
    """URLs already parsed, shared by the listener's connections: callers send the same few
    URLs over and over, and parsing one cost about 2 µs of a request."""

    def send(self, data: bytes) -> None:
        """Write a keep-alive response: the loop turn's first at once, later ones together
        at the end of the turn.

        A request to a model run inline is answered in the read callback (``run_eagerly``).
        With 64 connections, answers written one by one as each request was read woke the
        client for each (wrk, on the other core, went back to sleep in between): 0.90x the
        requests a second of the task-per-request code, and 15 µs more CPU a request, the
        kernel's wake-ups. Written together after the turn's reads, as tasks did, they made
        1.25x; but holding every answer to the end of the turn cost one connection 6 %
        (nothing else to wait for). Writing the first at once and keeping the rest gives
        1.11x at one connection and 1.25x at 64 (ab_commits.py, interleaved rounds)."""
        if asyncio.current_task() is not None:
            # Answered by a task (a request that waited on a pool thread or a batch): at once, as
            # before; kept to the turn's end, a batch's answers reached the client later and
            # its next requests too (2 ms batching at 64 connections: 0.90x, the gate's A/B).
            self.send_now(data)
            return
        pending = self.pending
        if pending:
            pending.append((self.transport, data))
            return
        self.transport.write(data)  # the turn's first: at once (one connection waits on nothing else)
        pending.append(None)  # the turn has begun: later answers wait for its end
        self.loop.call_soon(_flush, pending)

    def send_now(self, data: bytes) -> None:
        """Write ``data`` now, after the responses kept for this turn (this connection's come
        first: a response to a pipelined request, before a 100 Continue or a closing answer
        of the next)."""
        if self.pending:
            _flush(self.pending)
        self.transport.write(data)

    def shutdown(self) -> None:
        # uvicorn closes each connection whose response is complete: write what is kept first.
        if self.pending:
            _flush(self.pending)
        super().shutdown()

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
            "waits": {},
            "pending": [],
        },
    )

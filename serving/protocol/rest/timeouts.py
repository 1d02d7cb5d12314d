"""Read timeouts for the REST listener, so slow clients cannot hold connections forever.

uvicorn closes idle keep-alive connections, but its timer restarts on every byte received,
so a client that drips its headers one byte at a time (slowloris), or sends headers and
never finishes the body, keeps a connection and a request slot open indefinitely. This
protocol adds two absolute timers per request:

- **headers**: from the connection (or the first byte of a request) to the end of its
  headers; on expiry the connection is closed;
- **body**: from the end of the headers to the end of the body; on expiry the connection is
  closed and the app sees ``http.disconnect`` (an inference request is then abandoned
  before compute).

The same lazy timer serves uvicorn's keep-alive wait (an idle connection closed after
``timeout_keep_alive`` seconds), which uvicorn arms as a loop timer after each response and
cancels at the next byte: with uvloop, a libuv timer made and stopped per request.

It also gives every request the one-write response cycle of serving.protocol.rest.onewrite.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from serving.protocol.rest.onewrite import OneWriteCycle

log = logging.getLogger("serving.rest")


class TimedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout: float = 10.0
    body_timeout: float = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # One lazy timer per connection: arming and disarming only move ``_deadline``, and the
        # timer, when due, re-arms itself for a deadline that moved later. Every request arms
        # twice and disarms once, and a loop timer set and cancelled each time cost about 3 µs
        # a request (hotpath.py's http stages); the timer now fires about once per
        # ``header_timeout`` on a busy connection.
        self._deadline: float | None = None  # loop time the awaited part must have arrived by
        self._awaiting = "headers"
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def _arm(self, seconds: float, what: str) -> None:
        deadline = self.loop.time() + seconds
        self._deadline = deadline
        self._awaiting = what
        timer = self._timer
        if timer is None or deadline < self._timer_at:
            if timer is not None:
                timer.cancel()
            self._timer_at = deadline
            self._timer = self.loop.call_at(deadline, self._due)

    def _disarm(self) -> None:
        self._deadline = None

    def _due(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None:
            return
        if deadline - self.loop.time() > 0.001:  # armed again since: wait for the later deadline
            self._timer_at = deadline
            self._timer = self.loop.call_at(deadline, self._due)
            return
        self._deadline = None
        self._expired(self._awaiting)

    def _expired(self, what: str) -> None:
        if what == "keep-alive":  # uvicorn's timeout_keep_alive_handler: an idle close, no log
            if not self.transport.is_closing():
                self.transport.close()
            return
        if not self.transport.is_closing():
            client = "%s:%d" % self.client if self.client else "client"  # noqa: UP031
            log.warning("%s did not send the request %s in time; closing the connection", client, what)
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout, "headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def _unset_keepalive_if_required(self) -> None:
        # uvicorn calls this at every byte received and when a response completes.
        if self._awaiting == "keep-alive":
            self._deadline = None
            self._awaiting = "headers"
        super()._unset_keepalive_if_required()  # a timer of uvicorn's own (none is armed)

    def on_response_complete(self) -> None:
        # uvicorn 0.54's HttpToolsProtocol.on_response_complete, with the keep-alive wait on
        # the lazy timer instead of a loop.call_later per response.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif self._deadline is None:  # else the next request's header timer already runs
            self._arm(self.timeout_keep_alive, "keep-alive")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # Else the connection's own header timer still runs. A keep-alive wait ends here too:
        # a request read in the same chunk as the one just answered in the read callback
        # (the protocol-level path) begins with no byte received after the answer.
        if self._deadline is None or self._awaiting == "keep-alive":
            self._arm(self.header_timeout, "headers")

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        # The cycle uvicorn just made, given the one-write ``respond`` (same attributes, one
        # more method; see serving/protocol/rest/onewrite.py).
        if type(self.cycle) is RequestResponseCycle:
            self.cycle.__class__ = OneWriteCycle
        self._arm(self.body_timeout, "body")

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()


def timed_protocol(header_timeout: float, body_timeout: float) -> type[TimedHttpToolsProtocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` with these timeouts."""
    return type(
        "TimedHttpToolsProtocol",
        (TimedHttpToolsProtocol,),
        {"header_timeout": header_timeout, "body_timeout": body_timeout},
    )

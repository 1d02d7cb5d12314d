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
        self._read_timer: asyncio.TimerHandle | None = None

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._read_timer = self.loop.call_later(seconds, self._expired, what)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _expired(self, what: str) -> None:
        self._read_timer = None
        if not self.transport.is_closing():
            client = "%s:%d" % self.client if self.client else "client"  # noqa: UP031
            log.warning("%s did not send the request %s in time; closing the connection", client, what)
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout, "headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._read_timer is None:
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

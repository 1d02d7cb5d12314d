"""One ``write`` per inference response instead of uvicorn's two.

uvicorn answers an ASGI response with one socket write for the status line and headers and
another for the body, after checking every header against two regular expressions. For a
one-row inference answer of ~150 bytes that is the costliest part of sending it: the second
write is a second system call and, when the client is idle, a second wake-up of its thread.
``OneWriteCycle`` is uvicorn's request/response cycle with one more method, ``respond``,
which writes status line, headers and body with a single ``transport.write``. The REST
listener's protocol (serving.protocol.rest.timeouts) gives each request this cycle; the
inference fast path (serving.protocol.rest.app) calls ``respond`` through ``try_respond`` and
falls back to the two ASGI sends whenever the cycle can't (another server, paused writes,
access log on). The headers it writes are the server's own (content type, lengths, version
and variant names validated at load), so the header checks are not needed.

It relies on uvicorn's cycle attributes; pyproject pins uvicorn's minor version for that,
and tests/protocol/rest/test_rest_onewrite.py checks keep-alive, ``Connection: close`` and
pipelined requests over a real socket.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, RequestResponseCycle


class OneWriteCycle(RequestResponseCycle):
    def respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
        """Sends the whole response in one write; False (nothing sent) when it can't."""
        if self.response_started or self.disconnected or self.flow.write_paused or self.access_log:
            return False
        self.response_started = True
        self.waiting_for_100_continue = False
        content = [STATUS_LINE[status]]
        for name, value in self.default_headers:
            content.extend((name, b": ", value, b"\r\n"))
        for name, value in headers:
            content.extend((name, b": ", value, b"\r\n"))
        if not self.keep_alive:
            content.append(b"connection: close\r\n")
        content.extend((b"content-length: ", str(len(body)).encode(), b"\r\n\r\n", body))
        self.transport.write(b"".join(content))
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()
        return True


def try_respond(
    send: Callable[..., Any], status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> bool:
    """``respond`` on the cycle behind an ASGI ``send`` (uvicorn passes the cycle's bound
    ``send``); False when ``send`` belongs to anything else."""
    cycle = getattr(send, "__self__", None)
    return type(cycle) is OneWriteCycle and cycle.respond(status, headers, body)

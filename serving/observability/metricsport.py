"""An optional second listener that serves only ``GET /metrics``.

For clusters that scrape on a port the inference Service does not expose (or protect with
another network policy). A few lines of asyncio streams, not a second web framework: one
request per connection, then close. With several workers it binds with SO_REUSEPORT like
the REST port; any worker answers with every worker's merged values.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from serving.observability.metrics import CONTENT_TYPE, Metrics

log = logging.getLogger("serving.observability.metrics")

_MAX_HEAD = 16 * 1024


def _response(
    status: str, body: bytes, content_type: str = "application/json", send_body: bool = True
) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + (body if send_body else b"")


async def start_metrics_server(sock: socket.socket, metrics: Metrics) -> asyncio.Server:
    """Serve ``GET /metrics`` (and ``HEAD``) on a bound, non-blocking socket."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            path = target.split("?", 1)[0]
            if path != "/metrics":
                reply = _response("404 Not Found", b'{"error":"only /metrics is served here"}')
            elif method not in ("GET", "HEAD"):
                reply = _response("405 Method Not Allowed", b'{"error":"use GET"}')
            else:
                # On a thread, so a large exposition does not stall the serving loop (rest/app.py).
                text = await asyncio.to_thread(metrics.exposition)
                reply = _response("200 OK", text, CONTENT_TYPE, send_body=method == "GET")
            writer.write(reply)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            with contextlib.suppress(Exception):
                writer.write(_response("400 Bad Request", b'{"error":"bad request"}'))
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, sock=sock, limit=_MAX_HEAD)
    log.info("metrics listening on http://%s:%d/metrics", *sock.getsockname()[:2])
    return server

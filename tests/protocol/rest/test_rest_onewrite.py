"""The one-write inference response (serving/protocol/rest/onewrite.py) over a raw socket
to the real server: each response is complete and well-formed HTTP/1.1, keep-alive
connections carry several requests, pipelined requests are answered in order,
``Connection: close`` and HTTP/1.0 close the connection, and errors take the same path."""

from __future__ import annotations

import socket

import orjson

from tests.server_process import ServerProcess

BODY = orjson.dumps(
    {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}
)


def _request(
    path: str = "/v2/models/iris-xgb/infer", body: bytes = BODY, extra: str = "", version: str = "1.1"
) -> bytes:
    head = (
        f"POST {path} HTTP/{version}\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


def _read_response(sock: socket.socket, buffer: bytearray) -> tuple[int, dict[str, str], bytes]:
    """Reads exactly one response (headers + content-length body) from ``buffer``/``sock``."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before a whole response"
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        assert name.lower() not in headers, f"header {name} sent twice"
        headers[name.lower()] = value.strip()
    length = int(headers["content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside a body"
        rest += chunk
    buffer[:] = rest[length:]
    return status, headers, rest[:length]


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(5)
    return sock.recv(1) == b""


def test_keep_alive_pipelining_and_errors(demo_server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", demo_server.http_port), timeout=10) as sock:
        buffer = bytearray()
        for _ in range(3):  # one after another on one connection
            sock.sendall(_request())
            status, headers, body = _read_response(sock, buffer)
            assert status == 200
            assert headers["content-type"] == "application/json"
            assert headers["x-model-version"] == "2"
            assert "date" in headers and "server" not in headers
            doc = orjson.loads(body)
            assert doc["model_name"] == "iris-xgb" and len(doc["outputs"][0]["data"]) == 3
        # three pipelined in one write, the middle one bad: answered in order
        bad = _request(body=b'{"inputs": 5}')
        pinned = _request("/v2/models/iris-xgb/versions/1/infer")
        sock.sendall(_request() + bad + pinned)
        answers = [_read_response(sock, buffer) for _ in range(3)]
        assert [a[0] for a in answers] == [200, 400, 200]
        assert "error" in orjson.loads(answers[1][2])
        assert answers[2][1]["x-model-version"] == "1"
        assert buffer == b""
        # the connection is still usable afterwards
        sock.sendall(_request())
        assert _read_response(sock, buffer)[0] == 200


def test_connection_close_and_http_1_0_close_the_socket(demo_server: ServerProcess) -> None:
    for extra, version in (("Connection: close\r\n", "1.1"), ("", "1.0")):
        with socket.create_connection(("127.0.0.1", demo_server.http_port), timeout=10) as sock:
            sock.sendall(_request(extra=extra, version=version))
            buffer = bytearray()
            status, headers, _ = _read_response(sock, buffer)
            assert status == 200
            assert headers["connection"] == "close"
            assert _closed(sock)

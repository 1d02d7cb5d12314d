"""HTTP details of the inference routes over a raw socket, on both REST inference paths (the
protocol-level one of serving/protocol/rest/direct.py and the ASGI one): chunked bodies,
``Expect: 100-continue``, methods other than POST, pipelined inference and non-inference
requests answered in order, percent-encoded paths, a client hanging up mid-body counted once;
and the guard that falls back to ASGI on another uvicorn."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import socket
import time
from typing import Any

import httpx
import orjson
import pytest

from serving.protocol.rest.direct import DirectProtocol, direct_protocol, run_eagerly, uvicorn_mismatch
from serving.protocol.rest.timeouts import TimedHttpToolsProtocol
from tests.protocol.rest.test_rest_onewrite import BODY, _closed, _read_response, _request
from tests.server_process import ServerProcess

HEAD = "POST /v2/models/iris-xgb/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


def _connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.http_port), timeout=10)


def test_the_path_the_server_runs_is_the_one_asked_for(demo_server: ServerProcess, rest_path: str) -> None:
    deadline = time.monotonic() + 10
    while "REST inference routes answered" not in demo_server.log():
        assert time.monotonic() < deadline, demo_server.log()
        time.sleep(0.05)
    direct = "answered in the HTTP protocol" in demo_server.log()
    assert direct == (rest_path == "protocol")


def test_chunked_body(demo_server: ServerProcess) -> None:
    with _connect(demo_server) as sock:
        pieces = [BODY[:10], BODY[10:40], BODY[40:]]
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        sock.sendall((HEAD + "Transfer-Encoding: chunked\r\n\r\n").encode())
        for i in range(0, len(chunked), 7):  # in small writes: the body arrives in pieces
            sock.sendall(chunked[i : i + 7])
        status, _, body = _read_response(sock, bytearray())
        assert status == 200, body
        assert len(orjson.loads(body)["outputs"][0]["data"]) == 3


def test_expect_100_continue(demo_server: ServerProcess) -> None:
    with _connect(demo_server) as sock:
        sock.sendall((HEAD + f"Content-Length: {len(BODY)}\r\nExpect: 100-continue\r\n\r\n").encode())
        buffer = bytearray()
        while b"\r\n\r\n" not in buffer:
            buffer += sock.recv(65536)
        assert bytes(buffer).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        del buffer[: len(b"HTTP/1.1 100 Continue\r\n\r\n")]
        sock.sendall(BODY)
        assert _read_response(sock, buffer)[0] == 200
    # An unknown model is answered at once, without asking for the body.
    with _connect(demo_server) as sock:
        head = HEAD.replace("iris-xgb", "no-such-model")
        sock.sendall((head + f"Content-Length: {len(BODY)}\r\nExpect: 100-continue\r\n\r\n").encode())
        status, _, body = _read_response(sock, bytearray())
        assert status == 404 and "no-such-model" in orjson.loads(body)["error"]


@pytest.mark.parametrize("method", ["GET", "PUT", "HEAD"])
def test_other_methods_are_405_with_allow(demo_server: ServerProcess, method: str) -> None:
    with _connect(demo_server) as sock:
        sock.sendall(f"{method} /v2/models/iris-xgb/infer HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        buffer = bytearray()
        while b"\r\n\r\n" not in buffer:
            buffer += sock.recv(65536)
        head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        assert lines[0].startswith("HTTP/1.1 405")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        assert headers["allow"] == "post"
        length = int(headers["content-length"])
        if method == "HEAD":
            sock.settimeout(0.3)
            with pytest.raises(TimeoutError):  # no body follows the head
                rest += sock.recv(65536)
        else:
            while len(rest) < length:
                rest += sock.recv(65536)
            assert "POST" in orjson.loads(rest)["error"]


def test_pipelined_inference_and_other_routes_in_order(demo_server: ServerProcess) -> None:
    v1 = orjson.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]})
    live = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    encoded = _request("/v2/models/iris%2Dxgb/versions/%31/infer")
    requests = [_request(), live, _request("/v1/models/iris-xgb:predict", v1), encoded, live, _request()]
    with _connect(demo_server) as sock:
        sock.sendall(b"".join(requests))
        buffer = bytearray()
        answers = [_read_response(sock, buffer) for _ in requests]
        assert [a[0] for a in answers] == [200] * len(requests)
        assert orjson.loads(answers[1][2]) == {"live": True}
        assert "predictions" in orjson.loads(answers[2][2])
        assert answers[3][1]["x-model-version"] == "1"
        assert "outputs" in orjson.loads(answers[5][2])
        assert buffer == b""
        # HTTP/1.0 after them closes the connection
        sock.sendall(_request(version="1.0"))
        assert _read_response(sock, buffer)[0] == 200
        assert _closed(sock)


def test_pipelined_answers_keep_their_order_up_to_a_closing_one(demo_server: ServerProcess) -> None:
    """Answers to pipelined requests come in request order, also when some are written at the
    end of the loop's turn (keep-alive answers of the protocol-level path) and the last one,
    which closes the connection, at once: each row is a different iris class, so an answer out
    of order shows."""
    rows = {0: [5.1, 3.5, 1.4, 0.2], 1: [6.4, 3.2, 4.5, 1.5], 2: [7.7, 3.0, 6.1, 2.3]}
    order = [1, 0, 2, 2, 1, 0]
    bodies = [
        orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": rows[c]}]})
        for c in order
    ]
    last = len(bodies) - 1
    requests = [
        _request(body=b, extra="Connection: close\r\n" if i == last else "") for i, b in enumerate(bodies)
    ]
    with _connect(demo_server) as sock:
        sock.sendall(b"".join(requests))
        buffer = bytearray()
        answers = [_read_response(sock, buffer) for _ in requests]
        assert _closed(sock)
    assert [status for status, _, _ in answers] == [200] * len(requests)
    classes = [
        max(range(3), key=orjson.loads(body)["outputs"][0]["data"].__getitem__) for _, _, body in answers
    ]
    assert classes == order
    assert answers[-1][1].get("connection") == "close"


def _count(server: ServerProcess, outcome: str) -> float:
    total = 0.0
    for line in httpx.get(f"{server.url}/metrics", timeout=10).text.splitlines():
        if (
            line.startswith("serving_requests_total{")
            and 'model="iris-xgb"' in line
            and 'protocol="rest"' in line
            and f'outcome="{outcome}"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_client_that_hangs_up_mid_body_is_counted_once(demo_server: ServerProcess) -> None:
    before = _count(demo_server, "4xx")
    with _connect(demo_server) as sock:
        sock.sendall((HEAD + f"Content-Length: {len(BODY)}\r\n\r\n").encode() + BODY[:20])
        # deliberate: a client that stalls mid-body, long enough for the server to take the head
        time.sleep(0.2)
    deadline = time.monotonic() + 10
    while _count(demo_server, "4xx") < before + 1:
        assert time.monotonic() < deadline, "the abandoned request was not counted"
        time.sleep(0.05)
    # deliberate: nothing to poll for a second count that must not come: time for it to show
    time.sleep(0.2)
    assert _count(demo_server, "4xx") == before + 1
    assert httpx.post(f"{demo_server.url}/v2/models/iris-xgb/infer", content=BODY).status_code == 200


def test_uvicorn_guard_accepts_the_installed_version_only() -> None:
    assert uvicorn_mismatch() is None
    assert "0.99" in (uvicorn_mismatch("0.99.1") or "")
    assert "not a release" in (uvicorn_mismatch("dev") or "")
    missing = uvicorn_mismatch(protocol=object) or ""
    assert "on_headers_complete" in missing and "_start_asgi_task" in missing


def test_another_uvicorn_falls_back_to_asgi_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    from serving.server import build
    from serving.settings import Settings

    parts = build(Settings(grpc_port=-1))
    inference = parts.rest_app.inference
    with caplog.at_level(logging.WARNING, logger="serving.rest"):
        fallback = direct_protocol(inference, 1.0, 2.0, uvicorn_version="0.60.0")
    assert issubclass(fallback, TimedHttpToolsProtocol) and not issubclass(fallback, DirectProtocol)
    assert (fallback.header_timeout, fallback.body_timeout) == (1.0, 2.0)
    assert any("through ASGI" in r.message and "0.60.0" in r.message for r in caplog.records)
    direct = direct_protocol(inference, 1.0, 2.0)
    assert issubclass(direct, DirectProtocol) and direct.inference is inference
    parts.executor.shutdown()


def test_event_loop_lag_is_exported(demo_server: ServerProcess) -> None:
    deadline = time.monotonic() + 10
    while True:
        text = httpx.get(f"{demo_server.url}/metrics", timeout=10).text
        counts = [
            line for line in text.splitlines() if line.startswith("serving_event_loop_lag_seconds_count")
        ]
        if counts and float(counts[0].rsplit(" ", 1)[1]) >= 1:
            break
        assert time.monotonic() < deadline, "no event loop lag sample within 10 s"
        time.sleep(0.1)
    assert 'serving_event_loop_lag_seconds_bucket{le="0.2"}' in text


# run_eagerly: the protocol-level path answers a request in the read callback when nothing
# waits, and hands it to a task at its first wait; these pin down that the hand-over behaves
# as if the coroutine had been a task from the start.


def test_run_eagerly_finishes_a_coroutine_that_never_waits_without_a_task() -> None:
    async def main() -> None:
        ran_in: list[Any] = []

        async def quick() -> int:
            ran_in.append(asyncio.current_task())
            return 1

        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[Any]] = set()
        returned = loop.create_future()
        # called from a loop callback, as the protocol's read callbacks are
        loop.call_soon(lambda: returned.set_result((run_eagerly(loop, quick(), tasks), list(ran_in))))
        assert await returned == (None, [None])  # done before it returned, outside any task
        assert not tasks

    asyncio.run(main())


def test_run_eagerly_hands_a_waiting_coroutine_to_a_task_that_sees_every_wait() -> None:
    def boom() -> None:
        raise ValueError("boom")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        first = loop.create_future()
        seen: list[Any] = []

        async def waits() -> str:
            seen.append("before")
            seen.append(await first)  # a future resolved later
            await asyncio.sleep(0)  # deliberate: a bare yield (one loop turn), not a wait
            try:
                await loop.run_in_executor(None, boom)  # a pool thread's exception
            except ValueError as exc:
                seen.append(str(exc))
            return "done"

        tasks: set[asyncio.Task[Any]] = set()
        task = run_eagerly(loop, waits(), tasks)
        assert task is not None and task in tasks and seen == ["before"]
        first.set_result(7)
        assert await task == "done"
        assert seen == ["before", 7, "boom"]
        await asyncio.sleep(0)  # deliberate: one loop turn, not a wait
        assert not tasks  # discarded once done, as the server's tasks are

    asyncio.run(main())


@pytest.mark.parametrize("ran_first", [True, False], ids=["after-its-first-step", "before-it-ran"])
def test_cancelling_the_task_reaches_the_coroutine_where_it_waits(ran_first: bool) -> None:
    """Drain cancels the server's tasks when its grace runs out; a request's coroutine must see
    the CancelledError where it waits (serve counts the request there), also when the task was
    cancelled before it took its first step."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        log: list[str] = []

        async def waits(on: asyncio.Future[None] | None) -> None:
            try:
                while True:  # a future, or bare yields (nothing the task could cancel itself)
                    await (on if on is not None else asyncio.sleep(0))  # deliberate: bare yields
            except asyncio.CancelledError:
                log.append("cancelled")
                raise

        for on in (loop.create_future(), None):
            log.clear()
            task = run_eagerly(loop, waits(on), set())
            assert task is not None
            if ran_first:
                await asyncio.sleep(0)  # deliberate: one loop turn, not a wait
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=5)
            assert done == {task} and task.cancelled()
            assert log == ["cancelled"], on

    asyncio.run(main())


def test_run_eagerly_runs_the_first_steps_in_the_context_the_task_gets() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="caller")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        gate = loop.create_future()
        seen: list[str] = []

        async def sets() -> None:
            token = var.set("request")
            await gate
            seen.append(var.get())
            var.reset(token)  # raises in another context than the one that set it

        task = run_eagerly(loop, sets(), set())
        assert task is not None and var.get() == "caller"  # the caller's context untouched
        gate.set_result(None)
        await task
        assert seen == ["request"]

    asyncio.run(main())


def test_run_eagerly_logs_what_a_first_step_raises(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise RuntimeError("bug")

    async def main() -> None:
        assert run_eagerly(asyncio.get_running_loop(), broken(), set()) is None

    with caplog.at_level(logging.ERROR, logger="serving.rest"):
        asyncio.run(main())
    assert "unexpected error in" in caplog.text and "RuntimeError: bug" in caplog.text

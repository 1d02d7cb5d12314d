"""Overload, deadlines and slow clients against the real server.

One server, one predict thread, ``max_inflight`` 2 per version, short read timeouts; the
``slow`` model really computes for a noticeable time (matrix products built from the input).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest

from tests.protocol.grpc.client import OipClient
from tests.reliability.models import write_good_model, write_slow_model
from tests.server_process import ServerProcess, rest_env, running_server

ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, rest_path: str) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("overload")
    write_slow_model(root / "repo")
    write_slow_model(root / "repo", "slower", rounds=32)
    write_good_model(root / "repo")
    env = {
        "SERVING_PREDICT_THREADS": "1",
        "SERVING_MAX_INFLIGHT": "2",
        "SERVING_HTTP_HEADER_TIMEOUT_SECONDS": "1",
        "SERVING_HTTP_BODY_TIMEOUT_SECONDS": "1.5",
        "SERVING_HTTP_KEEP_ALIVE_SECONDS": "3",
        **rest_env(rest_path),
    }
    with running_server(root / "repo", root / "logs", env=env) as srv:
        yield srv


def _value(server: ServerProcess, name: str, *labels: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + "{") and all(label in line for label in labels):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _metric(server: ServerProcess, model: str, reason: str) -> float:
    return _value(server, "serving_rejections_total", f'model="{model}"', f'reason="{reason}"')


def _computed(server: ServerProcess, model: str) -> float:
    return _value(server, "serving_compute_duration_seconds_count", f'model="{model}"')


def _hold_the_predict_thread(server: ServerProcess) -> threading.Thread:
    """Start a long request on ``slower`` and return once it is inside the server."""
    holder = threading.Thread(
        target=httpx.post, args=(f"{server.url}/v2/models/slower/infer",), kwargs={"json": ROW, "timeout": 60}
    )
    holder.start()
    deadline = time.monotonic() + 10
    while _value(server, "serving_inflight_requests", 'model="slower"') < 1:
        assert time.monotonic() < deadline, "the holding request never arrived"
        time.sleep(0.005)
    return holder


def _slow_call_seconds(server: ServerProcess) -> float:
    start = time.perf_counter()
    response = httpx.post(f"{server.url}/v2/models/slow/infer", json=ROW, timeout=30)
    assert response.status_code == 200, response.text
    return time.perf_counter() - start


def test_overload_fails_fast_with_503_retry_after_and_is_counted(server: ServerProcess) -> None:
    assert _slow_call_seconds(server) > 0.05  # the model really takes time
    before = _metric(server, "slow", "overload")

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v2/models/slow/infer", json=ROW) for _ in range(8)))

    responses = asyncio.run(burst())
    codes = sorted(r.status_code for r in responses)
    # Two fit under max_inflight; the rest arrive while both are still in the stage.
    assert codes.count(200) >= 2 and codes.count(503) >= 4, codes
    assert set(codes) <= {200, 503}
    for response in responses:
        if response.status_code == 503:
            assert response.headers["retry-after"] == "1"
            assert "max_inflight 2" in response.json()["error"]
    assert _metric(server, "slow", "overload") - before == codes.count(503)
    # The bound is per version: another model is not affected, and the slow one recovers.
    good = httpx.post(f"{server.url}/v2/models/good/infer", json=ROW, timeout=30)
    assert good.status_code == 200
    assert httpx.post(f"{server.url}/v2/models/slow/infer", json=ROW, timeout=30).status_code == 200


def test_overload_over_grpc_is_resource_exhausted(server: ServerProcess) -> None:
    client = OipClient(server.grpc_target)
    try:
        pb = client.pb

        def request() -> Any:
            req = pb.ModelInferRequest(model_name="slow")
            tensor = req.inputs.add(name="x", datatype="FP32", shape=[1, 4])
            tensor.contents.fp32_contents.extend([1, 2, 3, 4])
            return req

        desc = pb.service.methods_by_name["ModelInfer"]
        rpc = client.channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=pb.messages[desc.output_type.name].FromString,
        )
        futures = [rpc.future(request(), timeout=60) for _ in range(8)]
        codes = []
        for future in futures:
            try:
                future.result()
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
                assert "max_inflight" in (exc.details() or "")
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 4, codes
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    finally:
        client.close()


def test_deadline_passed_while_waiting_for_a_thread_is_504_and_never_computed(
    server: ServerProcess,
) -> None:
    before = _metric(server, "slow", "deadline")

    holder = _hold_the_predict_thread(server)
    second = httpx.post(
        f"{server.url}/v2/models/slow/infer", json=ROW, headers={"x-request-timeout-ms": "10"}, timeout=30
    )
    holder.join(30)
    assert second.status_code == 504, second.text
    assert "deadline" in second.json()["error"]
    assert _metric(server, "slow", "deadline") - before == 1


def test_deadline_header_must_be_a_positive_integer(server: ServerProcess) -> None:
    for value in ("abc", "-5", "0", "1.5", "9" * 50):
        response = httpx.post(
            f"{server.url}/v2/models/good/infer",
            json=ROW,
            headers={"x-request-timeout-ms": value},
            timeout=10,
        )
        assert response.status_code == 400, (value, response.text)
        assert "x-request-timeout-ms" in response.json()["error"]
    ok = httpx.post(
        f"{server.url}/v2/models/good/infer", json=ROW, headers={"x-request-timeout-ms": "5000"}, timeout=10
    )
    assert ok.status_code == 200


def test_grpc_deadline_is_honoured(server: ServerProcess) -> None:
    computed = _computed(server, "slow")
    client = OipClient(server.grpc_target)
    try:
        req = client.pb.ModelInferRequest(model_name="slow")
        tensor = req.inputs.add(name="x", datatype="FP32", shape=[1, 4])
        tensor.contents.fp32_contents.extend([1, 2, 3, 4])
        holder = _hold_the_predict_thread(server)
        with pytest.raises(grpc.RpcError) as err:
            client.call("ModelInfer", req, timeout=0.03)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        holder.join(30)
        # grpc.aio cancels the handler at the deadline, so the call still waiting for the
        # predict thread is dropped, never computed. A request sent now waits behind that call
        # were it still queued: once it is answered, it is the only one computed.
        probe = httpx.post(f"{server.url}/v2/models/slow/infer", json=ROW, timeout=30)
        assert probe.status_code == 200
        assert _computed(server, "slow") - computed == 1
        assert httpx.get(f"{server.url}/v2/health/live", timeout=5).status_code == 200
    finally:
        client.close()


def _connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.http_port), timeout=10)


def _closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closes ``sock`` (reads until EOF); fails after ``seconds``."""
    start = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic() - start


def test_slowloris_headers_are_cut_off_without_blocking_others(server: ServerProcess) -> None:
    request = b"POST /v2/models/good/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    drip = _connect(server)
    idle = _connect(server)  # connects and never says anything
    start = time.monotonic()
    sent = 0
    closed = False
    # Drip one header byte every 100 ms: uvicorn's keep-alive timer restarts on each byte;
    # the header timeout (1 s) does not.
    while time.monotonic() - start < 4:
        try:
            drip.sendall(request[sent % len(request) : sent % len(request) + 1])
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        sent += 1
        # Meanwhile other clients are served normally.
        if sent % 5 == 0:
            good = httpx.post(f"{server.url}/v2/models/good/infer", json=ROW, timeout=5)
            assert good.status_code == 200
        time.sleep(0.1)  # deliberate: the drip's pace
    elapsed = time.monotonic() - start
    if not closed:
        elapsed = _closed_within(drip, 2) + elapsed
    assert elapsed < 3, f"the dripping connection stayed open for {elapsed:.1f}s"
    assert _closed_within(idle, 2) < 2
    drip.close()
    idle.close()


def test_read_timers_follow_each_request_on_a_busy_connection(server: ServerProcess) -> None:
    """The read timers are one lazy timer per connection whose deadline each request moves
    (serving/protocol/rest/timeouts.py): a connection busy for longer than both timeouts is
    never cut while it keeps sending whole requests, and its next request that drips its
    headers is cut one header timeout (1 s) after its first byte, not later."""
    body = json.dumps(ROW).encode()
    request = (
        b"POST /v2/models/good/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % len(body)
    ) + body
    with _connect(server) as sock, sock.makefile("rb") as reader:
        start = time.monotonic()
        answered = 0
        while time.monotonic() - start < 2.5:  # past the header (1 s) and body (1.5 s) timeouts
            sock.sendall(request)
            status = reader.readline()
            assert status.startswith(b"HTTP/1.1 200"), status
            length = 0
            while (line := reader.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            reader.read(length)
            answered += 1
        assert answered > 10
        sock.sendall(request[:20])  # the next request's first bytes, then nothing
        closed_after = _closed_within(sock, 4)
        assert 0.8 < closed_after < 2.0, f"closed {closed_after:.2f} s after the headers began"


def _whole_request() -> bytes:
    body = json.dumps(ROW).encode()
    head = (
        b"POST /v2/models/good/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % len(body)
    )
    return head + body


def test_an_idle_keep_alive_connection_is_closed_after_the_keep_alive_time(server: ServerProcess) -> None:
    """The keep-alive wait is on the connection's lazy read timer (serving/protocol/rest/timeouts.py),
    not a loop timer per response: an answered connection that says nothing more is closed
    after SERVING_HTTP_KEEP_ALIVE_SECONDS (3 s here), not before and not much later."""
    with _connect(server) as sock, sock.makefile("rb") as reader:
        sock.sendall(_whole_request())
        assert reader.readline().startswith(b"HTTP/1.1 200")
        closed_after = _closed_within(sock, 6)  # from the answer's status line
        assert 2.5 < closed_after < 4.5, f"closed {closed_after:.2f} s after the answer"


def test_a_request_read_with_the_answered_one_gets_the_header_timeout(server: ServerProcess) -> None:
    """A request whose first bytes come in the same packet as the request before it (answered
    in the read callback on the protocol-level path, before those bytes are parsed) is cut
    one header timeout (1 s) after, not after the keep-alive time (3 s)."""
    # Past the first request (a pool thread measures the model) and the 63 after a wait that
    # run as tasks (serving/protocol/rest/direct.py): the model is now answered in the read callback.
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for _ in range(80):
            assert client.post("/v2/models/good/infer", json=ROW).status_code == 200
    with _connect(server) as sock:
        start = time.monotonic()
        sock.sendall(_whole_request() + b"POST /v2/models/good/infer HTTP/1.1\r\nhost")
        closed_after = _closed_within(sock, 6)
        assert 0.8 < closed_after < 2.0, f"closed {closed_after:.2f} s after the request began"
        assert time.monotonic() - start < 2.5


def test_body_that_never_finishes_is_cut_off(server: ServerProcess) -> None:
    sock = _connect(server)
    sock.sendall(
        b"POST /v2/models/good/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 1000\r\n\r\n" + b'{"inputs": ['
    )
    start = time.monotonic()
    good = httpx.post(f"{server.url}/v2/models/good/infer", json=ROW, timeout=5)
    assert good.status_code == 200
    assert _closed_within(sock, 4) + (time.monotonic() - start) < 4
    sock.close()
    assert httpx.get(f"{server.url}/v2/health/live", timeout=5).status_code == 200

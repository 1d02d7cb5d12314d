"""Graceful drain on SIGTERM and worker replacement, against the real server process."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.protocol.grpc.client import OipClient
from tests.reliability.models import write_good_model, write_slow_model
from tests.server_process import ServerProcess, rest_env, start_server
from tests.waiting import wait_until

ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
DRAIN_ENV = {
    "SERVING_DRAIN_DELAY_SECONDS": "1",
    "SERVING_DRAIN_GRACE_SECONDS": "10",
    "SERVING_HTTP_BODY_TIMEOUT_SECONDS": "10",
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("drain-repo")
    write_good_model(root)
    write_slow_model(root)
    return root


class LoadBalancer:
    """Clients behind a pretend load balancer: they send steadily until the server's
    readiness turns 503 (the endpoint leaves the Service), as Kubernetes does."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.routed = threading.Event()
        self.routed.set()
        self.outcomes: Counter[str] = Counter()
        self.errors: list[str] = []
        self.sent_after_sigterm = 0
        self.sigterm_at: float | None = None
        self._lock = threading.Lock()

    def _record(self, outcome: str, detail: str = "") -> None:
        with self._lock:
            self.outcomes[outcome] += 1
            if outcome != "ok":
                self.errors.append(detail or outcome)
            if self.sigterm_at is not None and outcome == "ok":
                self.sent_after_sigterm += 1

    def watch_readiness(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                ready = httpx.get(f"{self.server.url}/v2/health/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                ready = False
            if not ready:
                # deliberate: the endpoint update takes a moment to reach the proxies
                time.sleep(0.2)
                self.routed.clear()
                return
            stop.wait(0.05)

    def rest_client(self, limit: int) -> None:
        for _ in range(limit):
            if not self.routed.is_set():
                return
            try:  # a fresh connection each time, as through a proxy
                response = httpx.post(
                    f"{self.server.url}/v2/models/good/infer",
                    json=ROW,
                    headers={"connection": "close"},
                    timeout=30,
                )
            except httpx.HTTPError as exc:
                self._record("error", f"REST {type(exc).__name__}: {exc}")
                continue
            if response.status_code == 200:
                self._record("ok")
            else:
                self._record("error", f"REST {response.status_code}: {response.text}")

    def grpc_client(self, limit: int) -> None:
        client = OipClient(self.server.grpc_target)
        try:
            for _ in range(limit):
                if not self.routed.is_set():
                    return
                req = client.pb.ModelInferRequest(model_name="good")
                tensor = req.inputs.add(name="x", datatype="FP32", shape=[1, 4])
                tensor.contents.fp32_contents.extend([1, 2, 3, 4])
                try:
                    client.call("ModelInfer", req, timeout=30)
                except grpc.RpcError as exc:
                    self._record("error", f"gRPC {exc.code()}: {exc.details()}")
                else:
                    self._record("ok")
        finally:
            client.close()


def _slow_upload(server: ServerProcess, seconds: float, result: dict[str, object]) -> None:
    """One request whose body trickles in over ``seconds``: in flight across the listener
    closing, so the drain must wait for it."""
    body = httpx.Request("POST", "/", json=ROW).content
    pieces = [body[i : i + 8] for i in range(0, len(body), 8)]

    def trickle() -> Iterator[bytes]:
        for piece in pieces:
            time.sleep(seconds / len(pieces))  # deliberate: the body trickles in
            yield piece

    try:
        response = httpx.post(
            f"{server.url}/v2/models/slow/infer",
            content=trickle(),
            headers={"content-type": "application/json", "content-length": str(len(body))},
            timeout=30,
        )
        result["status"] = response.status_code
        result["finished"] = time.monotonic()
    except httpx.HTTPError as exc:
        result["status"] = f"{type(exc).__name__}: {exc}"


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except OSError:
        return True


def test_sigterm_under_load_loses_no_accepted_request(repo: Path, tmp_path: Path, rest_path: str) -> None:
    server = start_server(repo, tmp_path, env={**DRAIN_ENV, **rest_env(rest_path)})
    lb = LoadBalancer(server)
    stop = threading.Event()
    threads = [threading.Thread(target=lb.rest_client, args=(3000,)) for _ in range(3)]
    threads.append(threading.Thread(target=lb.grpc_client, args=(3000,)))
    watcher = threading.Thread(target=lb.watch_readiness, args=(stop,))
    upload: dict[str, object] = {}
    try:
        for thread in threads:
            thread.start()
        watcher.start()
        wait_until(lambda: lb.outcomes["ok"] > 10, 60, message=lambda: f"no load: {lb.errors[:5]}")
        assert lb.outcomes["ok"] > 10, lb.errors[:5]
        lb.sigterm_at = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        # Not ready at once, on both protocols, while still serving.
        ready = httpx.get(f"{server.url}/v2/health/ready", timeout=5)
        assert ready.status_code == 503
        with grpc.insecure_channel(server.grpc_target) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
        # A request that starts during the delay and is still uploading when the listener
        # closes (1 s after SIGTERM) must be finished, not cut.
        uploader = threading.Thread(target=_slow_upload, args=(server, 2.0, upload))
        uploader.start()
        # the listener closes 1 s after SIGTERM: refused within 1.6 s of the upload's start
        wait_until(
            lambda: _refused(server.http_port), 1.6, 0.1, "still accepting connections after the drain delay"
        )
        assert _refused(server.http_port), "still accepting connections after the drain delay"
        uploader.join(30)
        code = server.proc.wait(30)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        watcher.join(30)
        server.stop(signal.SIGKILL)
    assert code == 0, server.log()
    assert upload.get("status") == 200, (upload, server.log()[-3000:])
    assert lb.errors == [], lb.errors[:10]
    assert lb.outcomes["ok"] > 20
    assert lb.sent_after_sigterm > 0  # requests kept being served during the delay
    assert "Traceback" not in server.log()


def _children(pid: int) -> set[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        pids = {int(p) for p in fh.read().split()}
    workers = set()
    for child in pids:
        with contextlib.suppress(OSError), open(f"/proc/{child}/cmdline", "rb") as fh:
            if b"resource_tracker" not in fh.read():
                workers.add(child)
    return workers


def test_workers_replace_a_killed_worker_and_exit_0_on_sigterm(repo: Path, tmp_path: Path) -> None:
    server = start_server(repo, tmp_path, args=["--workers", "2"], env=DRAIN_ENV)
    try:
        deadline = time.monotonic() + 60
        # Both processes exist before both listen: wait until each has bound its socket, or the
        # victim may be the only listener and the next request is refused.
        while len(workers := _children(server.proc.pid)) < 2 or server.log().count("REST listening on") < 2:
            assert time.monotonic() < deadline, "two workers never started"
            time.sleep(0.2)
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)  # a hard crash inside one worker
        # The other worker keeps answering while the supervisor starts a replacement.
        response = httpx.post(
            f"{server.url}/v2/models/good/infer", json=ROW, headers={"connection": "close"}, timeout=10
        )
        assert response.status_code == 200
        deadline = time.monotonic() + 60
        while True:
            current = _children(server.proc.pid)
            if len(current) == 2 and victim not in current:
                break
            assert time.monotonic() < deadline, f"worker not replaced: {current}"
            time.sleep(0.2)
        assert "starting a new one" in server.log()
        # Both workers answer (fresh connections are spread across them by the kernel).
        deadline = time.monotonic() + 60
        codes: Counter[int] = Counter()
        while codes[200] < 30:
            assert time.monotonic() < deadline
            try:
                r = httpx.post(
                    f"{server.url}/v2/models/good/infer",
                    json=ROW,
                    headers={"connection": "close"},
                    timeout=10,
                )
                codes[r.status_code] += 1
            except httpx.ConnectError:  # the new worker is binding; never the case once up
                time.sleep(0.1)
        assert set(codes) == {200}
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(60)
    finally:
        server.stop(signal.SIGKILL)
    assert code == 0, server.log()[-3000:]


def test_second_signal_exits_at_once(repo: Path, tmp_path: Path) -> None:
    server = start_server(repo, tmp_path, env={**DRAIN_ENV, "SERVING_DRAIN_DELAY_SECONDS": "30"})
    try:
        server.proc.send_signal(signal.SIGTERM)
        wait_until(
            lambda: httpx.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 503,
            10,
            message="still ready after SIGTERM",
        )
        assert httpx.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 503
        assert httpx.post(f"{server.url}/v2/models/good/infer", json=ROW, timeout=5).status_code == 200
        start = time.monotonic()
        server.proc.send_signal(signal.SIGINT)
        code = server.proc.wait(15)
        assert time.monotonic() - start < 10
    finally:
        server.stop(signal.SIGKILL)
    assert code == 0, server.log()[-3000:]

"""Start-up failures print one line saying what to do, exit non-zero and show no traceback;
SIGTERM during start-up stops loading and exits 0 (serving/server.py, serving/cli.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server_process import ROOT, free_port
from tests.tinymodels import write_identity_model


def serve(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "serving.cli", "serve", "--host", "127.0.0.1", *args]
    return subprocess.run(
        cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout, env={**os.environ, **(env or {})}
    )


def error_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    return [line for line in output.splitlines() if line.startswith("serving: error: ")]


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    write_identity_model(tmp_path / "repo", "good", "FP32")
    return tmp_path / "repo"


@pytest.mark.parametrize("which", ["--http-port", "--grpc-port"])
def test_a_port_in_use_is_one_line_naming_the_flag(repo: Path, taken_port: int, which: str) -> None:
    ports = {"--http-port": str(free_port()), "--grpc-port": str(free_port()), which: str(taken_port)}
    done = serve("--model-repo", str(repo), *[x for kv in ports.items() for x in kv])
    assert done.returncode != 0
    assert error_lines(done) == [
        f"serving: error: port {taken_port} on 127.0.0.1 is in use: stop the other process or "
        f"pick another port with {which}"
    ]
    assert (done.stdout + done.stderr).strip().count("\n") == 0  # nothing else: it failed before loading


def test_strict_with_a_broken_model_is_one_line(repo: Path) -> None:
    (repo / "good" / "1" / "model.onnx").write_bytes(b"not onnx")
    done = serve("--model-repo", str(repo), "--http-port", str(free_port()), "--grpc-port", "-1", "--strict")
    assert done.returncode != 0
    [line] = error_lines(done)
    assert line.startswith("serving: error: --strict: 1 model version(s) failed to load: good/1: ")
    assert "start without --strict" in line


def test_bad_settings_are_one_line(repo: Path) -> None:
    done = serve("--model-repo", str(repo), env={"SERVING_MAX_INFLIGHT": "-1"})
    assert done.returncode != 0
    [line] = error_lines(done)
    assert "SERVING_MAX_INFLIGHT" in line and "greater than or equal to 0" in line


def test_a_missing_repository_is_one_line(tmp_path: Path) -> None:
    done = serve(
        "--model-repo", str(tmp_path / "nowhere"), "--http-port", str(free_port()), "--grpc-port", "-1"
    )
    assert done.returncode != 0
    [line] = error_lines(done)
    assert "is not a directory" in line and "--model-repo" in line


def test_sigterm_during_start_up_stops_loading_and_exits_0(tmp_path: Path) -> None:
    for i in range(40):
        write_identity_model(tmp_path / "repo", f"m{i:02d}", "FP32")
    cmd = [sys.executable, "-m", "serving.cli", "serve", "--model-repo", str(tmp_path / "repo")]
    cmd += ["--host", "127.0.0.1", "--http-port", str(free_port()), "--grpc-port", "-1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:  # the first model is loaded: start-up is under way
        if "model m00 version 1 ready" in line:
            break
    proc.send_signal(signal.SIGTERM)
    start = time.monotonic()
    rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, rest
    assert time.monotonic() - start < 30
    assert "stopped during start-up" in rest and "model m39 version 1 ready" not in rest

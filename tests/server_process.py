"""Start the real server (``python -m serving.cli serve``) on free loopback ports for tests."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
DEMO_REPO = ROOT / "model_repo"


REST_PATHS = ("protocol", "asgi")
"""``Settings.rest_infer_path`` values: the protocol-level inference path and the ASGI one."""


def rest_env(path: str) -> dict[str, str]:
    """The server environment selecting REST inference path ``path``."""
    return {"SERVING_REST_INFER_PATH": path}


# Ports for servers that tests start, below Linux's ephemeral range (32768-60999) and one block
# per xdist worker. A port the kernel hands out for bind(0) is free only until the server binds
# it: meanwhile any outgoing connection of any test process may take it as its local port (a
# full suite makes thousands), and "Address already in use" failed a run. Outgoing connections
# never get these ports, and no other worker picks from this block.
_PORT_BASE, _PORT_BLOCK = 20000, 800
_candidates: Iterator[int] | None = None


def _port_candidates() -> Iterator[int]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    start = _PORT_BASE + (int(worker) % 15 if worker.isdigit() else 0) * _PORT_BLOCK
    offset = (os.getpid() * 37) % _PORT_BLOCK  # another start each run: last run's servers may linger
    while True:
        for i in range(_PORT_BLOCK):
            yield start + (offset + i) % _PORT_BLOCK


def free_port() -> int:
    """A loopback port nothing uses, which this process hands out again only after 800 others."""
    global _candidates
    if _candidates is None:
        _candidates = _port_candidates()
    for _, port in zip(range(_PORT_BLOCK), _candidates, strict=False):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use (another program, or a server of a moment ago in TIME_WAIT)
            return port
    raise RuntimeError(f"no free port in {_PORT_BLOCK} tries")


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def start_server(
    repo: Path,
    log_dir: Path,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    grpc: bool = True,
    wait_ready: bool = True,
    timeout: float = 90,
) -> ServerProcess:
    http_port = free_port()
    grpc_port = free_port() if grpc else -1
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"server-{http_port}.log"
    cmd = [
        sys.executable, "-m", "serving.cli", "serve",
        "--model-repo", str(repo), "--host", "127.0.0.1",
        "--http-port", str(http_port), "--grpc-port", str(grpc_port), *args,
    ]  # fmt: skip
    # No drain delay on SIGTERM unless a test asks for one (the default 5 s is for Kubernetes).
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "SERVING_DRAIN_DELAY_SECONDS": "0", **(env or {})}
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=full_env, cwd=ROOT)
    server = ServerProcess(proc, http_port, grpc_port, log_path)
    if wait_ready:
        wait_until_ready(server, timeout)
    return server


def wait_until_ready(server: ServerProcess, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited with {server.proc.returncode}:\n{server.log()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/v2/health/ready", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"server not ready after {timeout}s:\n{server.log()}")


# A Python warning the server process printed (``path:line: SomeWarning: message``): pytest's
# warnings-as-errors does not reach a subprocess, so ``running_server`` fails on these instead.
PYTHON_WARNING = re.compile(r"^\S+:\d+: \w*Warning: .*$", re.MULTILINE)


@contextlib.contextmanager
def running_server(repo: Path, log_dir: Path, **kwargs: object) -> Iterator[ServerProcess]:
    server = start_server(repo, log_dir, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()
    warnings = PYTHON_WARNING.findall(server.log())
    assert not warnings, f"the server logged Python warnings: {warnings[:3]}"

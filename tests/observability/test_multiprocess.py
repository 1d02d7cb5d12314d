"""``--workers 2``: every worker's /metrics reports the whole server's counts, exactly once.

The supervisor gives the workers a fresh PROMETHEUS_MULTIPROC_DIR; each scrape (whichever
worker the kernel hands the connection to) merges every worker's values. A worker that dies
keeps its counts in the totals, its live gauges leave the merge, and the directory is removed
when the server stops.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.observability.test_metrics import infer, total
from tests.server_process import DEMO_REPO, ServerProcess, running_server

pytestmark = pytest.mark.slow


def access_pids(server: ServerProcess) -> Counter[int]:
    """How many access-log lines each worker pid wrote (sample rate 1: one per request)."""
    pids: Counter[int] = Counter()
    for line in server.log().splitlines():
        if line.startswith("{") and '"log":"access"' in line:
            pids[json.loads(line)["pid"]] += 1
    return pids


def scrapes(server: ServerProcess, times: int = 6) -> list[str]:
    """Several scrapes, each on a new connection, so both workers answer some."""
    out = []
    for _ in range(times):
        response = httpx.get(f"{server.url}/metrics", headers={"connection": "close"})
        assert response.status_code == 200
        out.append(response.text)
    return out


def requests_seen(text: str) -> tuple[float, float]:
    return (
        total(text, "serving_requests_total", model="iris-xgb"),
        total(text, "serving_request_duration_seconds_count", model="iris-xgb"),
    )


def send(server: ServerProcess, n: int) -> None:
    for _ in range(n):  # a new connection per request: SO_REUSEPORT spreads them
        assert infer(server.url, 1).status_code == 200


def test_two_workers_count_each_request_once(tmp_path: Path, promtool: str) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(DEMO_REPO / "iris-xgb", repo / "iris-xgb")
    before_dirs = set(glob.glob(os.path.join(tempfile.gettempdir(), "serving-metrics-*")))
    with running_server(
        repo,
        tmp_path / "logs",
        args=["--workers", "2"],
        grpc=False,
        env={"SERVING_ACCESS_LOG_SAMPLE_RATE": "1"},
    ) as server:
        # both workers up: requests until each has answered some (bounded)
        deadline = time.monotonic() + 60
        while len(access_pids(server)) < 2:
            assert time.monotonic() < deadline, f"second worker never answered:\n{server.log()[-3000:]}"
            send(server, 5)
        metrics_dirs = set(glob.glob(os.path.join(tempfile.gettempdir(), "serving-metrics-*"))) - before_dirs
        pids = set(access_pids(server))
        (metrics_dir,) = [
            d for d in metrics_dirs if any(f"_{pid}.db" in n for n in os.listdir(d) for pid in pids)
        ]

        sent = sum(access_pids(server).values())
        for text in scrapes(server):
            assert requests_seen(text) == (sent, sent)

        send(server, 40)
        sent += 40
        per_worker = access_pids(server)
        assert sum(per_worker.values()) == sent and len(per_worker) == 2
        assert min(per_worker.values()) >= 3, per_worker  # both really served
        texts = scrapes(server)
        for text in texts:
            assert requests_seen(text) == (sent, sent)
            assert total(text, "serving_inflight_requests", model="iris-xgb") == 0
            for version in ("1", "2"):  # a state is 1, not 1 per worker
                assert (
                    total(text, "serving_model_state", model="iris-xgb", version=version, state="READY") == 1
                )
        check = subprocess.run([promtool, "check", "metrics"], input=texts[0], capture_output=True, text=True)
        assert check.returncode == 0 and not (check.stdout + check.stderr).strip(), (
            check.stdout + check.stderr
        )

        # One worker dies: its counts stay, its live gauges go, a new worker takes its place.
        victim = min(per_worker)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while any(
            n.endswith(f"_{victim}.db") and n.startswith("gauge_live") for n in os.listdir(metrics_dir)
        ):
            assert time.monotonic() < deadline, os.listdir(metrics_dir)
            time.sleep(0.2)
        assert f"counter_{victim}.db" in os.listdir(metrics_dir)
        while len(set(access_pids(server)) - {victim}) < 2:  # the replacement answers
            assert time.monotonic() < deadline, server.log()[-3000:]
            send(server, 5)
        sent = sum(access_pids(server).values())
        for text in scrapes(server):
            assert requests_seen(text) == (sent, sent)
            assert total(text, "serving_model_state", model="iris-xgb", version="2", state="READY") == 1
    assert not os.path.exists(metrics_dir), "the supervisor leaves its metrics directory behind"

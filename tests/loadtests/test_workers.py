"""Worker processes: ``--workers 2`` spreads connections over both, and "all cores" thread
settings are split so workers don't oversubscribe."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import httpx

from serving.settings import Settings
from serving.supervisor import share_threads
from tests.server_process import DEMO_REPO, running_server


def test_share_threads_splits_all_cores_settings_only() -> None:
    settings = Settings(workers=2, onnx_intra_op_threads=0, xgboost_nthread=1, xgboost_large_batch_nthread=0)
    shared = share_threads(settings, cores=8)
    assert shared.onnx_intra_op_threads == 4
    assert shared.xgboost_large_batch_nthread == 4
    assert shared.xgboost_nthread == 1  # an explicit count is kept
    assert (
        share_threads(
            Settings(workers=16, xgboost_large_batch_nthread=0), cores=2
        ).xgboost_large_batch_nthread
        == 1
    )


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_two_workers_share_the_port_and_both_serve(tmp_path: Path) -> None:
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}

    async def burst(url: str) -> list[int]:
        # one request per fresh connection: SO_REUSEPORT spreads connections, not requests
        async def one() -> int:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                return (await client.post("/v2/models/iris-xgb/infer", json=body)).status_code

        statuses: list[int] = []
        for _ in range(10):
            statuses += await asyncio.gather(*(one() for _ in range(20)))
        return statuses

    with running_server(DEMO_REPO, tmp_path, args=["--workers", "2"], grpc=False) as server:
        deadline = time.monotonic() + 30
        workers: list[int] = []
        while time.monotonic() < deadline:  # both workers up (plus multiprocessing's helper)
            workers = [p for p in _children(server.proc.pid) if _is_worker(p)]
            # both listening, not just started: a worker still loading models burns CPU too
            if len(workers) >= 2 and server.log().count("REST listening on") >= 2:
                break
            time.sleep(0.2)
        before = {pid: _cpu_ticks(pid) for pid in workers}
        statuses = asyncio.run(burst(server.url))
        after = {pid: _cpu_ticks(pid) for pid in workers}
    assert statuses == [200] * 200
    busy = [pid for pid in workers if after[pid] - before[pid] >= 2]
    assert len(busy) >= 2, (before, after)


def _is_worker(pid: int) -> bool:
    """A worker has threads of its own (event loop, predict pool); the resource tracker has one."""
    try:
        return len(os.listdir(f"/proc/{pid}/task")) > 2
    except OSError:
        return False

"""Resident memory of one server holding one model, ours against KServe's and MLServer's, side by side.

Each server is started fresh on the benchmark's 200-tree booster (``bench.write_repo``) with one
model only: ours with the native booster (``bench-xgb``, served through its ONNX twin), ours with
the booster exported to ONNX (``bench-onnx``), KServe's stock ModelServer with an xgbserver-style
model and MLServer + mlserver-xgboost (the peers from their own virtualenvs, as ``bench.py`` makes
them). Each is checked for the right answer, sent ``--requests`` one-row requests, then measured:
resident memory (VmRSS) of the server and every process it started (MLServer predicts in a
worker), and proportional memory (Pss, shared pages split between processes) when the kernel
exposes ``smaps_rollup``. Targets run in ``--rounds`` interleaved rounds; the table shows each
round and the median.

    .venv/bin/python loadtests/memory.py --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench import (  # noqa: E402
    PEER_PINS,
    Target,
    ensure_venv,
    free_port,
    json_body,
    started,
    write_repo,
)

ROOT = HERE.parent


def tree(pid: int) -> list[int]:
    """``pid`` and every live descendant."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                raw = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(raw[raw.rfind(")") + 2 :].split()[1])
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        found.append(current)
        frontier.extend(child for child, parent in parents.items() if parent == current)
    return found


def _kb(path: Path, field: str) -> float:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def memory_mb(pid: int) -> tuple[float, float, int]:
    """(RSS MB, PSS MB, processes) summed over ``pid``'s process tree."""
    pids = tree(pid)
    rss = sum(_kb(Path(f"/proc/{p}/status"), "VmRSS") for p in pids)
    pss = sum(_kb(Path(f"/proc/{p}/smaps_rollup"), "Pss") for p in pids)
    return rss / 1024, pss / 1024, len(pids)


def targets(work: Path, files: dict[str, Path], venv_dir: Path, peers: bool) -> list[Target]:
    py = sys.executable
    found = []
    for model in ("bench-xgb", "bench-onnx"):
        repo = work / f"repo-{model}"
        shutil.copytree(work / "repo" / model, repo / model)
        http = free_port()
        ours = Target(
            f"ours ({model})",
            [py, "-m", "serving.cli", "serve", "--model-repo", str(repo), "--host", "127.0.0.1",
             "--http-port", str(http), "--grpc-port", str(free_port()), "--log-level", "warning"],
            http, env={"SERVING_WORKERS": "1"},
        )  # fmt: skip
        found.append(ours)
        found[-1].input_name = model  # the model to ask (see measure)
    if not peers:
        return found
    kserve_py = ensure_venv(venv_dir, "kserve")
    http = free_port()
    kserve = Target(
        "kserve (bench-xgb)",
        [str(kserve_py), str(HERE / "peers" / "kserve_xgb.py"), "--model_name", "bench-xgb",
         "--model_file", str(files["bench-xgb"]), "--http_port", str(http), "--grpc_port", str(free_port())],
        http,
    )  # fmt: skip
    kserve.input_name = "bench-xgb"
    found.append(kserve)
    mlserver_py = ensure_venv(venv_dir, "mlserver")
    ml_dir = work / "mlserver"
    (ml_dir / "bench-xgb").mkdir(parents=True)
    shutil.copy(files["bench-xgb"], ml_dir / "bench-xgb" / "model.json")
    (ml_dir / "bench-xgb" / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "bench-xgb",
                "implementation": "mlserver_xgboost.XGBoostModel",
                "parameters": {"uri": "./model.json", "version": "1"},
            }
        )
    )
    http = free_port()
    settings = {"http_port": http, "grpc_port": free_port(), "metrics_port": free_port(), "host": "127.0.0.1"}
    (ml_dir / "settings.json").write_text(json.dumps(settings))
    mlserver = Target(
        "mlserver (bench-xgb)", [str(mlserver_py.parent / "mlserver"), "start", str(ml_dir)], http
    )
    mlserver.cwd = ml_dir
    mlserver.input_name = "bench-xgb"
    found.append(mlserver)
    return found


def measure(target: Target, logs: Path, requests: int, cpu: int) -> dict[str, Any]:
    model = target.input_name
    body = json_body(1, "input")
    with started(target, cpu, logs) as proc:
        url = f"http://127.0.0.1:{target.http_port}/v2/models/{model}/infer"
        with httpx.Client(timeout=30) as client:
            first = client.post(url, content=body, headers={"content-type": "application/json"})
            if first.status_code != 200:
                raise SystemExit(f"{target.name}: {first.status_code} {first.text[:300]}")
            answer = first.json()["outputs"][0]["data"][0]
            for _ in range(requests):
                client.post(url, content=body, headers={"content-type": "application/json"})
        time.sleep(0.5)  # deliberate: let the servers' lazy start-up work (threads, caches) settle
        rss, pss, processes = memory_mb(proc.pid)
    return {"target": target.name, "rss_mb": round(rss, 1), "pss_mb": round(pss, 1),
            "processes": processes, "answer": round(float(answer), 6)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--venv-dir", type=Path, default=Path.home() / ".cache" / "serving-bench")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="memory-bench-"))
    load = os.getloadavg()
    try:
        files = write_repo(work, heavy=False, train_rows=2_000)
        logs = work / "logs"
        logs.mkdir()
        found = targets(work, files, args.venv_dir, not args.no_peers)
        results: dict[str, list[dict[str, Any]]] = {t.name: [] for t in found}
        for _ in range(args.rounds):
            for target in found:
                results[target.name].append(measure(target, logs, args.requests, args.server_cpu))
        print(
            f"peers: {json.dumps(PEER_PINS)}; load average at the start {load}, at the end {os.getloadavg()}"
        )
        print("| server, one model | RSS MB (each round) | RSS MB (median) | PSS MB (median) | processes |")
        print("|---|---|---|---|---|")
        for name, rounds in results.items():
            rss = [r["rss_mb"] for r in rounds]
            pss = statistics.median(r["pss_mb"] for r in rounds)
            print(f"| {name} | {', '.join(f'{x:.0f}' for x in rss)} | {statistics.median(rss):.0f} | "
                  f"{pss:.0f} | {rounds[-1]['processes']} |")  # fmt: skip
        print("MEMJSON " + json.dumps(results))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""One server with many demo boosters: time to ready, memory, /metrics size and scrape time, p50.

Builds a repository of ``--models`` copies of the committed demo boosters, alternating
``iris-xgb`` (two versions) and ``cancer-xgb`` (one), so 200 models hold 300 versions whose
files are identical within each kind; starts ``serving serve`` on it (pinned to
``--server-cpu``) and reports, as one JSON line and a short table:

- ``ready_s``: from the process start to ``/v2/health/ready`` answering 200;
- ``rss_mb``: the server's resident memory once ready;
- ``metrics_bytes`` / ``metrics_lines`` / ``scrape_ms``: ``/metrics`` after one request to each
  version, and the median wall time of ``--scrapes`` scrapes back to back (nothing moved between
  them); ``scrape_first_ms``: the first scrape (the exposition builds its caches);
  ``scrape_moved_ms``: the median of five scrapes, each after one more request to every version
  (every request and stage series moved);
- ``probe_during_scrapes_max_ms`` / ``_p50_ms``: one-row requests sent every 10 ms on another
  connection while the ``--scrapes`` scrapes run: how long a scrape holds other requests back;
- ``p50_us``: one-row REST JSON latency on one keep-alive connection (``--requests`` calls).

    .venv/bin/python loadtests/many_models.py --models 200
    .venv/bin/python loadtests/many_models.py --models 200 --env SERVING_STAGE_METRICS=model
    .venv/bin/python loadtests/many_models.py --models 200 --exposition 2   # library vs fast, alternately
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench import free_port, pinned  # noqa: E402

KINDS = (("iris-xgb", ("1", "2"), 4), ("cancer-xgb", ("1",), 30))


def write_repo(root: Path, models: int) -> list[tuple[str, str, int]]:
    """``models`` copies of the demo boosters; returns (model, version, features) per version."""
    versions = []
    for i in range(models):
        source, kept, features = KINDS[i % len(KINDS)]
        name = f"{source}-{i}"
        shutil.copytree(ROOT / "model_repo" / source, root / name)
        versions += [(name, v, features) for v in kept]
    return versions


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def row(name: str, features: int) -> dict[str, object]:
    return {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, features], "data": [0.5] * features}]
    }


def _probe(
    url: str, model: str, body: dict[str, object], running: threading.Event, latencies: list[float]
) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        while running.is_set():
            start = time.perf_counter()
            client.post(f"/v2/models/{model}/infer", json=body)
            latencies.append(time.perf_counter() - start)
            time.sleep(0.01)  # deliberate: the probe's pace, one request every 10 ms


def serve_once(
    args: argparse.Namespace, work: Path, versions: list[tuple[str, str, int]], extra_env: list[str]
) -> dict[str, object]:
    """Start one server on the repository in ``work``, measure it, stop it: one summary."""
    port = free_port()
    env = {**os.environ, "SERVING_WORKERS": "1", **dict(e.split("=", 1) for e in extra_env)}
    command = [
        sys.executable, "-m", "serving.cli", "serve", "--model-repo", str(work / "repo"),
        "--host", "127.0.0.1", "--http-port", str(port), "--grpc-port", "-1", "--log-level", "warning",
    ]  # fmt: skip
    load = os.getloadavg()
    started = time.monotonic()
    proc = subprocess.Popen(pinned(args.server_cpu, command), env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"the server exited with {proc.returncode}")
                try:
                    if client.get("/v2/health/ready").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)
            ready_s = time.monotonic() - started
            rss = rss_mb(proc.pid)
            for name, version, features in versions:
                answer = client.post(f"/v2/models/{name}/versions/{version}/infer", json=row(name, features))
                assert answer.status_code == 200, answer.text
            start = time.perf_counter()
            client.get("/metrics")
            first = time.perf_counter() - start
            # A probe on its own connection (one request every 10 ms) while /metrics is
            # scraped: how long a scrape holds other requests back.
            probe_latencies: list[float] = []
            scraping = threading.Event()
            scraping.set()
            name, _, features = versions[0]
            probe = threading.Thread(
                target=_probe, args=(url, name, row(name, features), scraping, probe_latencies)
            )
            probe.start()
            scrapes, text = [], b""
            try:
                for _ in range(args.scrapes):
                    start = time.perf_counter()
                    text = client.get("/metrics").content
                    scrapes.append(time.perf_counter() - start)
            finally:
                scraping.clear()
                probe.join()
            moved = []
            for _ in range(5):
                for name, version, features in versions:
                    client.post(f"/v2/models/{name}/versions/{version}/infer", json=row(name, features))
                start = time.perf_counter()
                client.get("/metrics")
                moved.append(time.perf_counter() - start)
            name, _, features = versions[0]
            body = row(name, features)
            latencies = []
            for _ in range(args.requests):
                start = time.perf_counter()
                client.post(f"/v2/models/{name}/infer", json=body)
                latencies.append(time.perf_counter() - start)
    finally:
        proc.terminate()
        proc.wait(30)
    if args.dump is not None:
        args.dump.write_bytes(text)
    return {
        "models": args.models,
        "versions": len(versions),
        "env": extra_env,
        "ready_s": round(ready_s, 2),
        "rss_mb": round(rss, 1),
        "metrics_bytes": len(text),
        "metrics_lines": text.count(b"\n"),
        "scrape_ms": round(statistics.median(scrapes) * 1000, 1),
        "scrape_first_ms": round(first * 1000, 1),
        "scrape_moved_ms": round(statistics.median(moved) * 1000, 1),
        "probe_during_scrapes_max_ms": round(max(probe_latencies, default=0.0) * 1000, 1),
        "probe_during_scrapes_p50_ms": round(statistics.median(probe_latencies or [0.0]) * 1000, 2),
        "p50_us": round(statistics.median(latencies) * 1e6),
        "load_start": [round(x, 2) for x in load],
        "load_end": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server")
    parser.add_argument("--dump", type=Path, help="write the last /metrics answer here")
    parser.add_argument("--scrapes", type=int, default=10, help="scrapes timed (and probed)")
    parser.add_argument(
        "--exposition",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="compare SERVING_METRICS_EXPOSITION=library and fast: ROUNDS rounds of one server each, alternately",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="many-models-"))
    try:
        versions = write_repo(work / "repo", args.models)
        if not args.exposition:
            print("MANYJSON " + json.dumps(serve_once(args, work, versions, args.env)))
            return
        keys = ("scrape_ms", "scrape_moved_ms", "scrape_first_ms", "probe_during_scrapes_max_ms")
        runs: dict[str, dict[str, list[float]]] = {
            mode: {k: [] for k in keys} for mode in ("library", "fast")
        }
        for _ in range(args.exposition):
            for mode, figures in runs.items():
                summary = serve_once(args, work, versions, [*args.env, f"SERVING_METRICS_EXPOSITION={mode}"])
                print("MANYJSON " + json.dumps(summary), flush=True)
                for key in keys:
                    figures[key].append(float(summary[key]))  # type: ignore[arg-type]
        ratios = {
            f"library_over_fast_{key}": round(
                statistics.median(runs["library"][key]) / max(statistics.median(runs["fast"][key]), 1e-9), 2
            )
            for key in keys[:3]
        }
        print("EXPOSITION " + json.dumps({**runs, **ratios}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

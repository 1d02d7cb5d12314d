"""Tail latency at 64 connections over repeated runs: ours against the raw-ASGI floor, interleaved.

Issue 33 asks for the p99 at 64 connections to stay within 3x the p50 across repeated runs (one
8-second run in three used to land at ~200 ms). This starts the raw-ASGI floor and our server
once each (pinned to ``--server-cpu``; wrk on ``--client-cpu``), then runs ``--runs`` wrk points
of ``--duration`` seconds on each, alternately (floor, ours, floor, ours, ...), so a change in
the machine's load hits both alike. For every run it prints req/s, p50, p99, max and p99 / p50;
then the worst ratio of each server, and our server's event-loop lag
(``serving_event_loop_lag_seconds``: how late a timer due every 0.25 s ran) over the whole
series: a stall that delays every connection shows there, unfair service between connections
does not.

    .venv/bin/python loadtests/tail.py --runs 8 --duration 8
    .venv/bin/python loadtests/tail.py --model bench-xgb --protocol binary
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench import Bench, Point, Row, Target, free_port, started, write_repo  # noqa: E402


def loop_lag(port: int) -> dict[str, float]:
    """The event-loop lag histogram's count, sum and buckets from our server's /metrics."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("serving_event_loop_lag_seconds"):
            name, _, value = line.rpartition(" ")
            found[name.replace("serving_event_loop_lag_seconds", "")] = float(value)
    return found


def lag_summary(lag: dict[str, float]) -> str:
    count = lag.get("_count", 0.0)
    if not count:
        return "no samples"
    buckets = sorted(
        (float(k.split('le="')[1].split('"')[0]), v) for k, v in lag.items() if k.startswith("_bucket")
    )
    worst = next((le for le, v in buckets if v >= count), float("inf"))
    under_5ms = next((v for le, v in buckets if le == 0.005), 0.0)
    return (
        f"{int(count)} samples, mean {lag.get('_sum', 0.0) / count * 1e3:.2f} ms, "
        f"{under_5ms / count:.1%} within 5 ms, all within {worst * 1e3:g} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--model", default="bench-onnx", choices=["bench-onnx", "bench-xgb"])
    parser.add_argument("--protocol", default="json", choices=["json", "binary"])
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for our server")
    args = parser.parse_args()
    bench_args = argparse.Namespace(
        out=Path(tempfile.mkdtemp(prefix="tail-")), server_cpu=args.server_cpu, client_cpu=args.client_cpu
    )
    bench = Bench(bench_args)
    write_repo(bench.work, heavy=False, train_rows=2_000)
    py = sys.executable
    port = free_port()
    floor = Target("raw-asgi", [py, str(HERE / "raw_asgi.py"), str(port)], port, ready_path="/")
    port = free_port()
    ours = Target(
        "ours",
        [py, "-m", "serving.cli", "serve", "--model-repo", str(bench.work / "repo"), "--host", "127.0.0.1",
         "--http-port", str(port), "--grpc-port", "-1", "--log-level", "warning"],
        port, env={"SERVING_WORKERS": "1", **dict(e.split("=", 1) for e in args.env)},
    )  # fmt: skip
    point = Point(args.protocol, args.model, 1, args.connections)
    load = os.getloadavg()
    rows: dict[str, list[Row]] = {"raw-asgi": [], "ours": []}
    with ExitStack() as stack:
        procs = {
            t.name: (t, stack.enter_context(started(t, bench.server_cpu, bench.logs))) for t in (floor, ours)
        }
        for target, proc in procs.values():  # warm-up
            bench.measure(target, proc, Point(args.protocol, args.model, 1, 8), 2.0)
        lag_before = loop_lag(ours.http_port)
        for run in range(args.runs):
            for name, (target, proc) in procs.items():
                row = bench.measure(target, proc, point, args.duration)
                rows[name].append(row)
                print(
                    f"run {run + 1} {name:9} {row.rps:8.0f} req/s  p50 {row.p50_us:7.0f} µs  "
                    f"p99 {row.p99_us:7.0f} µs  p99/p50 {row.p99_us / max(row.p50_us, 1):.2f}  "
                    f"errors {row.errors}",
                    flush=True,
                )
        lag_after = loop_lag(ours.http_port)
    lag = {k: lag_after.get(k, 0.0) - lag_before.get(k, 0.0) for k in lag_after}
    summary: dict[str, Any] = {"load_start": load, "load_end": os.getloadavg(), "point": point.__dict__}
    for name, found in rows.items():
        ratios = [r.p99_us / max(r.p50_us, 1) for r in found]
        summary[name] = {
            "p50_us": [r.p50_us for r in found],
            "p99_us": [r.p99_us for r in found],
            "worst_p99_over_p50": round(max(ratios), 2),
            "errors": sum(r.errors for r in found),
        }
        print(
            f"{name}: worst p99/p50 {max(ratios):.2f} over {len(found)} runs; errors {summary[name]['errors']}"
        )
    print(f"ours, event-loop lag over the runs: {lag_summary(lag)}")
    print(f"load average at the start {load}, at the end {os.getloadavg()}")
    print("TAILJSON " + json.dumps(summary))


if __name__ == "__main__":
    main()

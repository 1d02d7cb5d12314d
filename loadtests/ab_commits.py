"""Two commits' servers over sockets, in interleaved rounds: where did throughput go?

Checks ``--old`` (a commit, tag or branch) out into a temporary git worktree, writes the
benchmark's models once (``bench.write_repo``), then runs ``--rounds`` rounds of: start the old
commit's server, one wrk point, stop it; start this checkout's server, one wrk point, stop it
(the order flips every round, so neither always goes first). Both run from this checkout's
virtualenv (the old code on ``PYTHONPATH``), so only our code differs, not the libraries. Each
point reports req/s, p50, p99 and the server's CPU time per request, which holds on a busy
machine better than req/s does; the medians and their ratio close the report.

    .venv/bin/python loadtests/ab_commits.py --old 5478a40 --rounds 4
    .venv/bin/python loadtests/ab_commits.py --old HEAD~5 --model bench-xgb --env SERVING_PREDICTION_METRICS=false

A commit older than the model repository format the current export writes may refuse some
of the benchmark's models; only ``--model`` has to load.
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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench import Bench, Point, Target, checkout, free_port, started, write_repo  # noqa: E402


def server(name: str, code: Path, repo: Path, env: dict[str, str]) -> Target:
    port = free_port()
    return Target(
        name,
        [sys.executable, "-m", "serving.cli", "serve", "--model-repo", str(repo), "--host", "127.0.0.1",
         "--http-port", str(port), "--grpc-port", "-1", "--log-level", "warning"],
        port, env={"SERVING_WORKERS": "1", "PYTHONPATH": str(code), **env}, cwd=code,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="the commit to compare this checkout with")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--model",
        default="bench-onnx",
        choices=["bench-onnx", "bench-xgb", "bench-heavy", "bench-heavy-batched", "bench-heavy-adaptive"],
    )
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for both servers")
    parser.add_argument(
        "--train-rows",
        type=int,
        default=2_000,
        help="rows the boosters are trained on; bench.py's full run uses 5000 (deeper trees: slower predicts)",
    )
    args = parser.parse_args()
    bench = Bench(argparse.Namespace(out=Path(tempfile.mkdtemp(prefix="ab-")), server_cpu=args.server_cpu,
                                     client_cpu=args.client_cpu))  # fmt: skip
    env = dict(e.split("=", 1) for e in args.env)
    load = os.getloadavg()
    results: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
    try:
        with checkout(args.old, bench.work / "old") as old_code:
            write_repo(bench.work, heavy="heavy" in args.model, train_rows=args.train_rows)
            repo = bench.work / "repo"
            sides = [("old", old_code), ("new", ROOT)]
            point = Point("json", args.model, 1, args.connections)
            for round_ in range(args.rounds):
                for side, code in sides:
                    target = server(side, code, repo, env)
                    with started(target, bench.server_cpu, bench.logs) as proc:
                        bench.measure(target, proc, Point("json", args.model, 1, 8), 2.0)  # warm-up
                        row = bench.measure(target, proc, point, args.duration)
                    results[side].append(
                        {
                            "rps": row.rps,
                            "p50_us": row.p50_us,
                            "p99_us": row.p99_us,
                            "errors": row.errors,
                            "cpu_us": row.server_cpu_us_per_req,
                            "load1": row.load1,
                        }
                    )
                    print(
                        f"round {round_ + 1} {side}: {row.rps:8.0f} req/s  p50 {row.p50_us:7.0f} µs  "
                        f"p99 {row.p99_us:7.0f} µs  server CPU {row.server_cpu_us_per_req:6.1f} µs/req  "
                        f"errors {row.errors}  load {row.load1}",
                        flush=True,
                    )
                sides.reverse()
    finally:
        shutil.rmtree(bench.work, ignore_errors=True)
    old_cpu = statistics.median(r["cpu_us"] for r in results["old"])
    new_cpu = statistics.median(r["cpu_us"] for r in results["new"])
    old_rps = statistics.median(r["rps"] for r in results["old"])
    new_rps = statistics.median(r["rps"] for r in results["new"])
    print(
        f"median over {args.rounds} rounds: old ({args.old}) {old_rps:.0f} req/s, {old_cpu:.1f} µs/req; "
        f"new {new_rps:.0f} req/s, {new_cpu:.1f} µs/req; new/old req/s {new_rps / old_rps:.3f}, "
        f"CPU per request {new_cpu / old_cpu:.3f}"
    )
    print(
        f"load average at the start {load}, at the end {os.getloadavg()}; {time.strftime('%H:%M UTC', time.gmtime())}"
    )
    print("ABJSON " + json.dumps({"old": args.old, "results": results}))


if __name__ == "__main__":
    main()

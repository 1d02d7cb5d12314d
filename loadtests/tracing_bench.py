"""What tracing costs, side by side in one run (docs/observability.md, issue 20).

    .venv/bin/python loadtests/tracing_bench.py --out /tmp/tracing-bench           # ~2.5 minutes
    .venv/bin/python loadtests/tracing_bench.py --before a7f268b --rounds 3 --duration 6

Every target serves the same generated repository (loadtests/bench.py's ``write_repo``) and
gets the same load: wrk, REST JSON, one row of ``bench-xgb``, at ``--connections``. All are
started first (server pinned to one core, wrk to the other) and then measured in interleaved
rounds (each target once per round), so a noisy neighbour hits every target alike; the table
shows each target's median over the rounds and its ratio to ``before`` and ``off``.

- ``raw-asgi``: the HTTP floor (a fixed body);
- ``before``: the server at ``--before`` (default: the merge base with main), which has no
  tracing code at all, from ``git archive`` into the work dir;
- ``off``: this checkout with tracing off (the default);
- ``on-1%``: ``SERVING_TRACING=true`` with ``parentbased_traceidratio`` at 0.01; spans go over
  OTLP/HTTP to a receiver in this process;
- ``on-100%``: every request traced (the worst case).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench import Bench, Point, Row, Target, free_port, log, started, write_repo  # noqa: E402

ROOT = HERE.parent


class _Sink(BaseHTTPRequestHandler):
    """Accepts OTLP/HTTP exports and answers 200 (counts the bytes, decodes nothing)."""

    received = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        type(self).received += len(body)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def merge_base() -> str:
    out = subprocess.run(["git", "merge-base", "HEAD", "main"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() or "HEAD"


def checkout(revision: str, where: Path) -> Path:
    where.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", revision, "serving"], cwd=ROOT, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive.stdout, check=True)
    return where


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "loadtests" / "results-tracing")
    parser.add_argument(
        "--before", default=None, help="git revision without tracing (default: merge base with main)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    args = parser.parse_args(argv)
    # Bench's own options that its helpers read
    args.only, args.smoke = None, True
    bench = Bench(args)
    before = args.before or merge_base()
    log(f"work dir {bench.work}; before = {before}")
    write_repo(bench.work, heavy=False, train_rows=2_000)
    old = checkout(before, bench.work / "before")

    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    sink.daemon_threads = True
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{sink.server_address[1]}"

    py = sys.executable
    point = Point("json", "bench-xgb", 1, args.connections)

    def ours(name: str, cwd: Path, env: dict[str, str]) -> Target:
        http = free_port()
        command = [py, "-m", "serving.cli", "serve", "--model-repo", str(bench.work / "repo"), "--host",
                   "127.0.0.1", "--http-port", str(http), "--grpc-port", "-1", "--log-level", "warning"]  # fmt: skip
        return Target(name, command, http, points=[point], env={"SERVING_WORKERS": "1", **env}, cwd=cwd)

    traced = {"SERVING_TRACING": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}
    raw_port = free_port()
    targets = [
        Target(
            "raw-asgi",
            [py, str(HERE / "raw_asgi.py"), str(raw_port)],
            raw_port,
            ready_path="/",
            points=[point],
        ),
        ours("before", old, {"PYTHONPATH": str(old)}),
        ours("off", ROOT, {}),
        ours(
            "on-1%",
            ROOT,
            {**traced, "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01"},
        ),
        ours("on-100%", ROOT, {**traced, "OTEL_TRACES_SAMPLER": "parentbased_always_on"}),
    ]
    results: dict[str, list[Row]] = {t.name: [] for t in targets}
    with contextlib.ExitStack() as stack:
        procs = {t.name: stack.enter_context(started(t, bench.server_cpu, bench.logs)) for t in targets}
        for target in targets:
            bench.measure(target, procs[target.name], point, args.warmup)
        for round_ in range(args.rounds):
            for target in targets:
                row = bench.measure(target, procs[target.name], point, args.duration)
                results[target.name].append(row)
                log(
                    f"  round {round_ + 1} {target.name:8} {row.rps:9.0f} req/s  p99 {row.p99_us:8.0f} µs  err {row.errors}"
                )
    sink.shutdown()

    def median(name: str, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in results[name])

    lines = [
        f"# Tracing cost, one run ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "",
        f"`{' '.join(['loadtests/tracing_bench.py', *(argv if argv is not None else sys.argv[1:])])}`; "
        f"before = `{before}`; REST JSON, bench-xgb, 1 row, {args.connections} connections, "
        f"{args.rounds} interleaved rounds of {args.duration:g} s, medians; OTLP bytes received: {_Sink.received}",
        "",
        "| target | req/s | / before | / off | / raw-asgi | p99 µs | server CPU µs/req | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for target in targets:
        name = target.name
        rps = median(name, "rps")
        lines.append(
            f"| {name} | {rps:.0f} | {rps / median('before', 'rps'):.3f} | {rps / median('off', 'rps'):.3f} | "
            f"{rps / median('raw-asgi', 'rps'):.3f} | {median(name, 'p99_us'):.0f} | "
            f"{median(name, 'server_cpu_us_per_req'):.1f} | {sum(r.errors for r in results[name])} |"
        )
    lines.append("")
    lines.append(
        "Per round (req/s): "
        + "; ".join(f"{n} {[round(r.rps) for r in rows]}" for n, rows in results.items())
    )
    report = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tracing.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

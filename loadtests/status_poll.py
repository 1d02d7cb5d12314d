"""What an open status page costs the server, side by side in one run (docs/guides/status-page.md).

    .venv/bin/python loadtests/status_poll.py                  # ~1.5 minutes
    .venv/bin/python loadtests/status_poll.py --rounds 5 --duration 8

One server (``SERVING_STATUS_PAGE=true``) on loadtests/bench.py's generated repository, pinned
to one core, wrk on the other: REST JSON, one row of ``bench-xgb``, at ``--connections``. Each
round runs wrk once per case, in alternating order, while pollers ask for ``/status/data`` at
the page's interval (serving/protocol/rest/status.py, ``POLL_MS``), as that many open browser
tabs would:

- ``no page``: nobody looks;
- ``1 page``: one poller;
- ``10 pages``: ten pollers (a team watching one rollout).

The table shows each case's median requests/s over the rounds and the server's CPU time per
inference request (process CPU over the run, pollers included), each with its ratio to
``no page``; on a busy machine the CPU ratio is the steadier figure.
Before the rounds, the server's CPU time per ``/status/data`` answer is measured on its own
(process CPU over 200 polls with no other traffic).
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
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench import Target, cpu_seconds, ensure_wrk, free_port, json_body, log, pinned, started, write_repo  # noqa: E402

from serving.protocol.rest.status import POLL_MS  # noqa: E402

CASES = {"no page": 0, "1 page": 1, "10 pages": 10}


def poller(url: str, stop: threading.Event, offset: float) -> None:
    """One open page: a GET of the JSON every POLL_MS, as status.js does."""
    with httpx.Client(timeout=10) as client:
        if stop.wait(offset):
            return
        while not stop.is_set():
            client.get(url).raise_for_status()
            stop.wait(POLL_MS / 1000)


def wrk_run(wrk: str, url: str, body: Path, conns: int, duration: int, cpu: int | None) -> tuple[float, int]:
    """(requests/s, requests) of one wrk run."""
    command = [
        wrk, "-t1", f"-c{conns}", f"-d{duration}s", "--timeout", "10s",
        "-s", str(HERE / "wrk_post.lua"), url, "--", str(body), "application/json",
    ]  # fmt: skip
    out = subprocess.run(pinned(cpu, command), capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    summary = json.loads(line[len("WRKJSON ") :])
    if summary["non2xx"] or summary["socket_errors"]:
        raise SystemExit(f"wrk saw errors: {summary}")
    return float(summary["requests"]) / (summary["duration_us"] / 1e6), int(summary["requests"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=6, help="seconds of wrk per case and round")
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    wrk = ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="status-poll-"))
    try:
        run(args, wrk, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, wrk: str, work: Path) -> None:
    two = (os.cpu_count() or 1) >= 2
    write_repo(work, heavy=False)
    body = work / "body.json"
    body.write_bytes(json_body(1))
    port = free_port()
    command = [
        sys.executable, "-m", "serving.cli", "serve", "--model-repo", str(work / "repo"),
        "--host", "127.0.0.1", "--http-port", str(port), "--grpc-port", "-1",
    ]  # fmt: skip
    target = Target(
        "status-page",
        command,
        port,
        env={"SERVING_STATUS_PAGE": "true", "SERVING_LOG_LEVEL": "warning"},
    )
    base = f"http://127.0.0.1:{port}"
    infer = f"{base}/v2/models/bench-xgb/infer"
    data = f"{base}/status/data"
    uptime = Path("/proc/loadavg").read_text().split()[:3]
    log(f"load average before: {' '.join(uptime)}")
    with started(target, 0 if two else None, work) as proc:
        wrk_run(wrk, infer, body, args.connections, 2, 1 if two else None)  # warm up; fills the timeline
        with httpx.Client(timeout=10) as client:
            client.get(data).raise_for_status()
            before = cpu_seconds(proc.pid)
            polls = 200
            for _ in range(polls):
                client.get(data).raise_for_status()
            per_poll_ms = (cpu_seconds(proc.pid) - before) / polls * 1e3
            size = len(client.get(data).content)
        rates: dict[str, list[float]] = {case: [] for case in CASES}
        cpu_us: dict[str, list[float]] = {case: [] for case in CASES}  # server CPU per inference
        order = list(CASES)
        for round_ in range(args.rounds):
            for case in order:
                stop = threading.Event()
                threads = [
                    threading.Thread(
                        target=poller, args=(data, stop, i * POLL_MS / 1000 / max(CASES[case], 1))
                    )
                    for i in range(CASES[case])
                ]
                for thread in threads:
                    thread.start()
                spent = cpu_seconds(proc.pid)
                rate, done = wrk_run(wrk, infer, body, args.connections, args.duration, 1 if two else None)
                cpu_us[case].append((cpu_seconds(proc.pid) - spent) / done * 1e6)
                rates[case].append(rate)
                stop.set()
                for thread in threads:
                    thread.join()
            log(f"round {round_ + 1}: " + ", ".join(f"{c} {rates[c][-1]:.0f}/s" for c in CASES))
            order.reverse()  # neither case always goes first
    uptime = Path("/proc/loadavg").read_text().split()[:3]
    baseline = statistics.median(rates["no page"])
    print(f"\n/status/data: {size} bytes, {per_poll_ms:.2f} ms of server CPU per answer (mean over {polls})")
    print(
        f"one open page (a poll every {POLL_MS / 1000:.0f} s): {per_poll_ms / POLL_MS * 100:.3f} % of one core\n"
    )
    cpu_base = statistics.median(cpu_us["no page"])
    print(
        f"{'case':10} {'req/s':>9} {'ratio':>7} {'cpu µs/req':>11} {'ratio':>7}"
        f"   (medians; wrk -c{args.connections}, {args.rounds} rounds x {args.duration} s)"
    )
    for case in CASES:
        median, cpu = statistics.median(rates[case]), statistics.median(cpu_us[case])
        print(f"{case:10} {median:9.0f} {median / baseline:7.3f} {cpu:11.1f} {cpu / cpu_base:7.3f}")
    print(f"load average after: {' '.join(uptime)}")


if __name__ == "__main__":
    main()

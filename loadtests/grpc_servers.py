"""grpc.aio against grpc's thread-pool server for one-row unary ModelInfer, side by side.

Both serve the fixed response of ``grpc_floor.py`` (what Python gRPC itself costs per call,
no model and no code of ours): ``aio`` is grpc.aio on uvloop, as our server runs it; ``sync``
is ``grpc.server`` with a ``ThreadPoolExecutor`` of ``--threads`` workers. Each is started
fresh, pinned to ``--server-cpu``, and loaded by ``grpc_load.py`` pinned to ``--client-cpu``,
in interleaved rounds (aio, sync, aio, sync, ...), so a change in the machine's load hits both
alike. Prints one line per point and the medians: req/s and server CPU µs per call (process
CPU, every thread, the figure that holds on a busy machine).

    .venv/bin/python loadtests/grpc_servers.py --rounds 2 -d 5 -c 1,64
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench import cpu_seconds, free_port, pinned, run_client  # noqa: E402


def point(mode: str, conns: int, args: argparse.Namespace) -> tuple[float, float]:
    port = free_port()
    command = [sys.executable, str(HERE / "grpc_floor.py"), str(port)]
    if mode == "sync":
        command += ["--sync", "--threads", str(args.threads)]
    server = subprocess.Popen(pinned(args.server_cpu, command))
    try:
        load = [
            sys.executable, str(HERE / "grpc_load.py"), f"127.0.0.1:{port}", "bench",
            "-c", str(conns), "-d", "1",
        ]  # fmt: skip
        time.sleep(1.0)
        run_client(load, args.client_cpu, "GRPCJSON ", 60)  # warm-up (and waits for the port)
        load[-1] = str(args.duration)
        before = cpu_seconds(server.pid)
        summary, _ = run_client(load, args.client_cpu, "GRPCJSON ", args.duration * 3 + 60)
        used = cpu_seconds(server.pid) - before
    finally:
        server.terminate()
        server.wait(15)
    requests = float(summary["requests"])
    return requests / (float(summary["duration_us"]) / 1e6), used / max(requests, 1.0) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--connections", type=lambda s: [int(c) for c in s.split(",")], default=[1, 64])
    parser.add_argument("-d", "--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for _ in range(args.rounds):
        for conns in args.connections:
            for mode in ("aio", "sync"):
                rps, cpu_us = point(mode, conns, args)
                results.setdefault((mode, conns), []).append((rps, cpu_us))
                print(f"{mode:4} c={conns:<3} {rps:8.0f} req/s  {cpu_us:6.1f} server CPU µs/call", flush=True)
    print(f"load average at end: {os.getloadavg()}")
    for conns in args.connections:
        aio = results[("aio", conns)]
        sync = results[("sync", conns)]
        a_rps, a_cpu = statistics.median(r for r, _ in aio), statistics.median(c for _, c in aio)
        s_rps, s_cpu = statistics.median(r for r, _ in sync), statistics.median(c for _, c in sync)
        print(
            f"c={conns}: aio {a_rps:,.0f} req/s {a_cpu:.0f} µs/call; sync {s_rps:,.0f} req/s "
            f"{s_cpu:.0f} µs/call; sync/aio req/s {s_rps / a_rps:.2f}, CPU {s_cpu / a_cpu:.2f}"
        )


if __name__ == "__main__":
    main()

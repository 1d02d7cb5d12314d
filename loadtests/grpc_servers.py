"""Python gRPC servers side by side for one-row unary ModelInfer: grpc.aio, grpc's thread-pool
server, grpclib.

Each serves the fixed response of ``grpc_floor.py`` (what the gRPC stack itself costs per call,
no model and no code of ours). Modes (``--modes``, comma-separated):

- ``aio``: grpc.aio on uvloop, as our server runs it;
- ``sync``: ``grpc.server`` with a ``ThreadPoolExecutor`` of ``--threads`` workers; ``sync-N``:
  the same with N workers (``sync-4,sync-16`` to see whether the pool size matters);
- ``grpclib``: grpclib (pure-asyncio gRPC on the h2 library) on uvloop, run with the python of
  its own virtualenv (``bench.py``'s ``PEER_PINS["grpclib"]``, made once under ``--venv-dir``),
  so grpclib never enters the project's lock.

Each point is a fresh server pinned to ``--server-cpu``, loaded by ``grpc_load.py`` (grpc.aio
client, one channel, N concurrent calls) pinned to ``--client-cpu``, in interleaved rounds
(every mode once per round and connection count), so a change in the machine's load hits every
mode alike. Prints one line per point and the medians: req/s and server CPU µs per call
(process CPU, every thread, the figure that holds on a busy machine), the share of its core the
client used, and each mode's ratio to ``aio``. ``--client h2load`` measures with nghttp2's C load
generator instead (``apt-get install nghttp2-client``), which needs a fifth of a core where the
grpc.aio client needs all of one, so the client's own cost sets no ceiling.

    .venv/bin/python loadtests/grpc_servers.py --rounds 3 -d 5 -c 1,64
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench import cpu_seconds, ensure_venv, free_port, pinned, run_client  # noqa: E402

MODES = ("aio", "sync", "grpclib")


def server_command(mode: str, port: int, args: argparse.Namespace) -> list[str]:
    floor = str(HERE / "grpc_floor.py")
    if mode == "aio":
        return [sys.executable, floor, str(port)]
    if mode == "sync" or mode.startswith("sync-"):
        threads = args.threads if mode == "sync" else int(mode.removeprefix("sync-"))
        return [sys.executable, floor, str(port), "--sync", "--threads", str(threads)]
    if mode == "grpclib":
        return [str(args.grpclib_python), floor, str(port), "--grpclib"]
    raise SystemExit(f"unknown mode {mode!r}: one of aio, sync, sync-N, grpclib")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def h2load_run(port: int, conns: int, args: argparse.Namespace) -> dict[str, float]:
    """h2load (nghttp2's C load generator) posting gRPC-framed ModelInfer requests on one
    connection with ``conns`` concurrent streams, like ``grpc_load.py``'s one channel, at a
    fraction of its CPU per call. It checks HTTP status, not ``grpc-status``: the grpc_load
    warm-up before it is what checks that calls succeed."""
    url = f"http://127.0.0.1:{port}/inference.GRPCInferenceService/ModelInfer"
    command = [
        "h2load", "-c", "1", "-m", str(conns), "-D", f"{round(args.duration * 1000)}ms", "-d", str(args.body),
        "-H", "content-type: application/grpc", "-H", "te: trailers", url,
    ]  # fmt: skip
    run = subprocess.run(
        pinned(args.client_cpu, command), capture_output=True, text=True, timeout=args.duration + 60
    )
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", run.stdout)
    took = re.search(r"finished in ([\d.]+)s", run.stdout)
    if run.returncode or not done or not took:
        raise SystemExit(f"h2load failed ({run.returncode}): {run.stdout[-1500:]}{run.stderr[-1500:]}")
    return {
        "requests": float(done[2]),
        "errors": float(done[1]) - float(done[2]),
        "duration_us": float(took[1]) * 1e6,
    }


def grpc_body(path: Path) -> Path:
    """The request grpc_load.py sends (one row of 32 FP32 features), in gRPC's length-prefixed
    framing: flag byte 0 (uncompressed), 4-byte big-endian length, the message."""
    from grpc_load import build_request

    message = build_request("bench", "input", 1, 32).SerializeToString()
    path.write_bytes(b"\x00" + struct.pack(">I", len(message)) + message)
    return path


def point(mode: str, conns: int, args: argparse.Namespace) -> tuple[float, float, float]:
    """req/s, server CPU µs per call, and the share of its core the client used (near 1.0:
    the client may be what set the pace)."""
    port = free_port()
    server = subprocess.Popen(pinned(args.server_cpu, server_command(mode, port, args)))
    try:
        load = [
            sys.executable, str(HERE / "grpc_load.py"), f"127.0.0.1:{port}", "bench",
            "-c", str(conns), "-d", "1",
        ]  # fmt: skip
        time.sleep(1.0)
        # warm-up (waits for the port, and checks that calls succeed whichever client measures)
        warm, _ = run_client(load, args.client_cpu, "GRPCJSON ", 60)
        if warm["errors"] or not warm["requests"]:
            raise SystemExit(f"{mode} c={conns}: {warm['errors']} of the warm-up calls failed")
        load[-1] = str(args.duration)
        before, client_before = cpu_seconds(server.pid), children_cpu()
        if args.client == "h2load":
            summary = h2load_run(port, conns, args)
        else:
            summary, _ = run_client(load, args.client_cpu, "GRPCJSON ", args.duration * 3 + 60)
        # the client is reaped by now, the server only below: the delta is the client's
        used, client = cpu_seconds(server.pid) - before, children_cpu() - client_before
    finally:
        server.terminate()
        server.wait(15)
    requests = float(summary["requests"])
    if summary["errors"]:
        raise SystemExit(f"{mode} c={conns}: {summary['errors']} calls failed")
    seconds = float(summary["duration_us"]) / 1e6
    return requests / seconds, used / max(requests, 1.0) * 1e6, client / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--connections", type=lambda s: [int(c) for c in s.split(",")], default=[1, 64])
    parser.add_argument("-d", "--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--modes", type=lambda s: s.split(","), default=list(MODES))
    parser.add_argument("--threads", type=int, default=8, help="thread-pool size of the sync mode")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--venv-dir", type=Path, default=Path.home() / ".cache" / "serving-bench")
    parser.add_argument(
        "--client",
        choices=["grpc", "h2load"],
        default="grpc",
        help="grpc: grpc_load.py (grpc.aio, as a Python caller sees it); h2load: nghttp2's C "
        "load generator (apt-get install nghttp2-client), so the client's own cost sets no ceiling",
    )
    args = parser.parse_args()
    if args.client == "h2load":
        if not shutil.which("h2load"):
            raise SystemExit("h2load is needed with --client h2load: apt-get install nghttp2-client")
        args.body = grpc_body(Path(tempfile.mkdtemp(prefix="grpc-servers-")) / "request.bin")
    if "grpclib" in args.modes:
        args.grpclib_python = ensure_venv(args.venv_dir, "grpclib")
    print(f"client {args.client}; load average at start: {os.getloadavg()}", flush=True)
    results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    for _ in range(args.rounds):
        for conns in args.connections:
            for mode in args.modes:
                rps, cpu_us, client = point(mode, conns, args)
                results.setdefault((mode, conns), []).append((rps, cpu_us, client))
                print(
                    f"{mode:8} c={conns:<3} {rps:8.0f} req/s  {cpu_us:6.1f} server CPU µs/call  "
                    f"client {client:4.0%} of its core",
                    flush=True,
                )
    print(f"load average at end: {os.getloadavg()}")
    for conns in args.connections:
        medians = {
            mode: (
                statistics.median(r for r, _, _ in results[(mode, conns)]),
                statistics.median(c for _, c, _ in results[(mode, conns)]),
                statistics.median(k for _, _, k in results[(mode, conns)]),
            )
            for mode in args.modes
        }
        base = "aio" if "aio" in medians else args.modes[0]
        base_rps, base_cpu, _ = medians[base]
        for mode, (rps, cpu, client) in medians.items():
            print(
                f"c={conns:<3} {mode:8} {rps:8,.0f} req/s {cpu:5.0f} µs/call, client {client:.0%}; "
                f"/{base}: req/s {rps / base_rps:.2f}, CPU {cpu / base_cpu:.2f}"
            )


if __name__ == "__main__":
    main()

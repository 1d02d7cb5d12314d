"""Soak test: mixed load against a real server for a long time, memory sampled throughout.

Starts ``serving serve`` on the demo repository (free loopback ports), then for
``--duration`` seconds sends a paced mix of requests from ``--concurrency`` callers:

- REST JSON (OIP v2) to every demo model, and KServe v1 ``:predict``,
- REST binary tensors (``Inference-Header-Content-Length``, binary outputs),
- gRPC ``ModelInfer`` (raw and typed contents),
- about 5 % bad requests of each protocol (which must get their 4xx / gRPC code).

Every ``--sample-every`` seconds it records the server's RSS (the process and any workers,
from /proc). At the end it prints (and writes to ``loadtests/results/``) a JSON report:
requests and outcomes per kind, the error count (any unexpected status, exception or wrong
answer), RSS at start, after warm-up and at the end, growth, and the slope of RSS over the
second half of the run. Not a CI test.

    python loadtests/soak.py --duration 600            # the 10-minute soak
    python loadtests/soak.py --duration 180 --rps 150   # a shorter run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from serving.protocol.grpc.stubs import SERVICE, load  # noqa: E402

MODELS = {  # name -> features
    "iris-xgb": 4,
    "cancer-xgb": 30,
    "cancer-onnx": 30,
    "digits-mlp": 64,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_bytes(pid: int) -> int:
    """RSS of ``pid`` and its descendants (workers), from /proc."""
    total = 0
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            with open(f"/proc/{current}/task/{current}/children") as fh:
                stack.extend(int(p) for p in fh.read().split())
        except OSError:
            continue
    return total


class Soak:
    def __init__(self, args: argparse.Namespace, http_port: int, grpc_port: int) -> None:
        self.args = args
        self.url = f"http://127.0.0.1:{http_port}"
        self.grpc_target = f"127.0.0.1:{grpc_port}"
        self.outcomes: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.error_examples: list[str] = []
        self.rng = random.Random(args.seed)
        self.data = np.random.default_rng(args.seed)
        self.pb = load()

    def _rows(self, model: str) -> np.ndarray:
        rows = self.rng.choice((1, 1, 1, 2, 8))
        return self.data.random((rows, MODELS[model]), dtype=np.float32)

    def _error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        if len(self.error_examples) < 20:
            self.error_examples.append(f"{kind}: {detail[:300]}")

    # -- request kinds: each returns normally when the answer is what it should be ----------
    async def rest_json(self, http: httpx.AsyncClient) -> None:
        model = self.rng.choice(list(MODELS))
        x = self._rows(model)
        body = {
            "inputs": [
                {"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
            ]
        }
        response = await http.post(f"/v2/models/{model}/infer", content=orjson.dumps(body))
        if response.status_code != 200 or response.json()["outputs"][0]["shape"][0] != x.shape[0]:
            raise AssertionError(f"{response.status_code} {response.text[:200]}")

    async def rest_v1(self, http: httpx.AsyncClient) -> None:
        model = self.rng.choice(list(MODELS))
        x = self._rows(model)
        response = await http.post(
            f"/v1/models/{model}:predict", content=orjson.dumps({"instances": x.tolist()})
        )
        if response.status_code != 200 or len(response.json()["predictions"]) != x.shape[0]:
            raise AssertionError(f"{response.status_code} {response.text[:200]}")

    async def rest_binary(self, http: httpx.AsyncClient) -> None:
        model = self.rng.choice(list(MODELS))
        x = self._rows(model)
        blob = x.astype("<f4").tobytes()
        header = orjson.dumps(
            {
                "inputs": [
                    {
                        "name": "input",
                        "datatype": "FP32",
                        "shape": list(x.shape),
                        "parameters": {"binary_data_size": len(blob)},
                    }
                ],
                "parameters": {"binary_data_output": True},
            }
        )
        response = await http.post(
            f"/v2/models/{model}/infer",
            content=header + blob,
            headers={
                "content-type": "application/octet-stream",
                "inference-header-content-length": str(len(header)),
            },
        )
        if response.status_code != 200 or "inference-header-content-length" not in response.headers:
            raise AssertionError(f"{response.status_code} {response.text[:200]}")

    async def grpc_infer(self, stub: Callable[..., Awaitable[Any]]) -> None:
        model = self.rng.choice(list(MODELS))
        x = self._rows(model)
        request = self.pb.ModelInferRequest(model_name=model)
        tensor = request.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
        if self.rng.random() < 0.5:
            request.raw_input_contents.append(x.astype("<f4").tobytes())
        else:
            tensor.contents.fp32_contents.extend(x.ravel().tolist())
        reply = await stub(request, timeout=30)
        if reply.model_name != model or reply.outputs[0].shape[0] != x.shape[0]:
            raise AssertionError(f"unexpected reply {reply}")

    async def bad_rest(self, http: httpx.AsyncClient) -> None:
        body, expected = self.rng.choice(
            [
                (b"{not json", 400),
                (
                    orjson.dumps(
                        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, -4], "data": []}]}
                    ),
                    400,
                ),
                (orjson.dumps({"inputs": []}), 400),
                (b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[1,2,3]}]}', 400),
            ]
        )
        response = await http.post("/v2/models/iris-xgb/infer", content=body)
        if response.status_code != expected or "error" not in response.json():
            raise AssertionError(f"bad request got {response.status_code} {response.text[:200]}")

    async def bad_binary(self, http: httpx.AsyncClient) -> None:
        header = orjson.dumps(
            {
                "inputs": [
                    {
                        "name": "input",
                        "datatype": "FP32",
                        "shape": [1, 4],
                        "parameters": {"binary_data_size": 16},
                    }
                ]
            }
        )
        response = await http.post(
            "/v2/models/iris-xgb/infer",
            content=header + b"\x00" * 8,  # 8 bytes where 16 are announced
            headers={
                "content-type": "application/octet-stream",
                "inference-header-content-length": str(len(header)),
            },
        )
        if response.status_code != 400:
            raise AssertionError(f"bad binary request got {response.status_code} {response.text[:200]}")

    async def bad_grpc(self, stub: Callable[..., Awaitable[Any]]) -> None:
        request = self.pb.ModelInferRequest(model_name="iris-xgb")
        request.inputs.add(name="input", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend([1.0])
        try:
            await stub(request, timeout=30)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise AssertionError(f"bad gRPC request got {exc.code()}") from None
            return
        raise AssertionError("bad gRPC request succeeded")

    # -- driving -----------------------------------------------------------------------
    async def run(self) -> None:
        args = self.args
        kinds: list[tuple[str, float]] = [
            ("rest_json", 0.35),
            ("rest_v1", 0.10),
            ("rest_binary", 0.20),
            ("grpc", 0.30),
            ("bad_rest", 0.02),
            ("bad_binary", 0.015),
            ("bad_grpc", 0.015),
        ]
        names = [k for k, _ in kinds]
        weights = [w for _, w in kinds]
        interval = args.concurrency / args.rps
        stop = time.monotonic() + args.duration
        limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
        async with (
            httpx.AsyncClient(base_url=self.url, timeout=30, limits=limits) as http,
            grpc.aio.insecure_channel(self.grpc_target) as channel,
        ):
            method = self.pb.service.methods_by_name["ModelInfer"]
            stub = channel.unary_unary(
                f"/{SERVICE}/ModelInfer",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=self.pb.messages[method.output_type.name].FromString,
            )
            calls: dict[str, Callable[[], Awaitable[None]]] = {
                "rest_json": lambda: self.rest_json(http),
                "rest_v1": lambda: self.rest_v1(http),
                "rest_binary": lambda: self.rest_binary(http),
                "grpc": lambda: self.grpc_infer(stub),
                "bad_rest": lambda: self.bad_rest(http),
                "bad_binary": lambda: self.bad_binary(http),
                "bad_grpc": lambda: self.bad_grpc(stub),
            }

            async def caller() -> None:
                next_at = time.monotonic()
                while (now := time.monotonic()) < stop:
                    if next_at > now:
                        await asyncio.sleep(next_at - now)
                    next_at += interval * self.rng.uniform(0.5, 1.5)
                    kind = self.rng.choices(names, weights)[0]
                    try:
                        await calls[kind]()
                    except Exception as exc:  # every failure is counted, none stops the soak
                        self._error(kind, f"{type(exc).__name__}: {exc}")
                    else:
                        self.outcomes[kind] += 1

            await asyncio.gather(*(caller() for _ in range(args.concurrency)))


async def sample_rss(pid: int, every: float, until: float, samples: list[tuple[float, int]]) -> None:
    start = time.monotonic()
    while time.monotonic() < until:
        samples.append((round(time.monotonic() - start, 1), rss_bytes(pid)))
        await asyncio.sleep(every)
    samples.append((round(time.monotonic() - start, 1), rss_bytes(pid)))


def slope_mb_per_min(samples: list[tuple[float, int]]) -> float:
    """Least-squares RSS slope over the second half of the run, in MB per minute."""
    half = samples[len(samples) // 2 :]
    if len(half) < 2:
        return 0.0
    t = np.array([s[0] for s in half]) / 60
    mb = np.array([s[1] for s in half]) / 2**20
    return float(np.polyfit(t, mb, 1)[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=600, help="seconds of load (default 600)")
    parser.add_argument("--rps", type=float, default=200, help="target requests per second (default 200)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent callers (default 8)")
    parser.add_argument("--sample-every", type=float, default=5, help="RSS sampling period, seconds")
    parser.add_argument("--warmup", type=float, default=30, help="seconds before the 'after warm-up' RSS")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    parser.add_argument("--repo", type=Path, default=ROOT / "model_repo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "loadtests" / "results")
    args = parser.parse_args()

    http_port, grpc_port = free_port(), free_port()
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / f"soak-server-{http_port}.log"
    cmd = [
        sys.executable, "-m", "serving.cli", "serve", "--model-repo", str(args.repo),
        "--host", "127.0.0.1", "--http-port", str(http_port), "--grpc-port", str(grpc_port),
        "--workers", str(args.workers), "--log-level", "warning",
    ]  # fmt: skip
    env = {**os.environ, "SERVING_DRAIN_DELAY_SECONDS": "0"}
    with log_path.open("wb") as log_file:
        server = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                print(log_path.read_text(), file=sys.stderr)
                return 1
            try:
                if httpx.get(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("server not ready after 120 s")
            time.sleep(0.2)
        soak = Soak(args, http_port, grpc_port)
        samples: list[tuple[float, int]] = []

        async def both() -> None:
            until = time.monotonic() + args.duration
            await asyncio.gather(soak.run(), sample_rss(server.pid, args.sample_every, until, samples))

        started = time.monotonic()
        asyncio.run(both())
        elapsed = time.monotonic() - started
        alive = server.poll() is None
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            exit_code = server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            exit_code = server.wait()

    mb = [s[1] / 2**20 for s in samples]
    warm = next((s[1] / 2**20 for s in samples if s[0] >= args.warmup), mb[0])
    total = sum(soak.outcomes.values()) + sum(soak.errors.values())
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "duration_s": round(elapsed, 1),
        "requests": total,
        "requests_per_s": round(total / elapsed, 1),
        "ok_by_kind": dict(soak.outcomes),
        "errors": sum(soak.errors.values()),
        "errors_by_kind": dict(soak.errors),
        "error_examples": soak.error_examples,
        "server_alive_at_end": alive,
        "server_exit_code": exit_code,
        "rss_mb_start": round(mb[0], 1),
        "rss_mb_after_warmup": round(warm, 1),
        "rss_mb_end": round(mb[-1], 1),
        "rss_mb_max": round(max(mb), 1),
        "rss_growth_after_warmup_mb": round(mb[-1] - warm, 1),
        "rss_growth_after_warmup_pct": round(100 * (mb[-1] - warm) / warm, 1),
        "rss_slope_second_half_mb_per_min": round(slope_mb_per_min(samples), 3),
        "rss_samples": [(t, round(b / 2**20, 1)) for t, b in samples],
    }
    path = args.out / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    summary = {k: v for k, v in report.items() if k != "rss_samples"}
    print(json.dumps(summary, indent=2))
    print(f"report: {path}")
    return 0 if report["errors"] == 0 and alive and exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

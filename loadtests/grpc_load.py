"""A gRPC load generator for OIP v2 ``ModelInfer``: N concurrent callers for a fixed time.

Runs as its own process (pinned by the harness to the client core) and prints one JSON line:
``GRPCJSON {"requests":..,"errors":..,"p50_us":..,"p90_us":..,"p99_us":..,"duration_us":..}``.
Against ``grpc_floor.py`` (a server that answers a fixed response) it shows its own ceiling,
so the harness can tell whether it, not the server, is the bottleneck.

    python loadtests/grpc_load.py 127.0.0.1:8081 bench-xgb --rows 1 --features 32 -c 8 -d 10

``--stream``: each of the N callers opens one ``ModelStreamInfer`` stream and sends its next
request when the previous answer arrives (one in flight per stream, like the unary callers),
so stream and unary rows at the same N compare the per-request cost of the two RPC kinds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc


def build_request(model: str, input_name: str, rows: int, features: int) -> service_pb2.ModelInferRequest:
    x = np.random.default_rng(0).normal(size=(rows, features)).astype(np.float32)
    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = input_name, "FP32"
    tensor.shape.extend([rows, features])
    request.raw_input_contents.append(x.tobytes())
    return request


def summary(latencies: list[float], errors: int, elapsed: float) -> dict[str, float]:
    """What bench.py reads from a run: counts, duration and latency percentiles in µs."""
    values = np.array(latencies) * 1e6 if latencies else np.zeros(1)
    return {
        "requests": len(latencies),
        "errors": errors,
        "duration_us": elapsed * 1e6,
        "p50_us": float(np.percentile(values, 50)),
        "p90_us": float(np.percentile(values, 90)),
        "p99_us": float(np.percentile(values, 99)),
    }


async def run(args: argparse.Namespace) -> dict[str, float]:
    """``args.concurrency`` callers for ``args.duration`` seconds, each making unary
    ``ModelInfer`` calls one after another, or (``args.stream``) writing each request on its
    own ``ModelStreamInfer`` stream and reading its answer before the next."""
    request = build_request(args.model, args.input, args.rows, args.features)
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(args.target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        await stub.ModelInfer(request, timeout=10)  # warm the channel
        stop = time.perf_counter() + args.duration

        async def unary() -> None:
            nonlocal errors
            while True:
                start = time.perf_counter()
                if start >= stop:
                    return
                try:
                    await stub.ModelInfer(request, timeout=10)
                except grpc.aio.AioRpcError:
                    errors += 1
                latencies.append(time.perf_counter() - start)

        async def stream() -> None:
            nonlocal errors
            call = stub.ModelStreamInfer()
            try:
                while True:
                    start = time.perf_counter()
                    if start >= stop:
                        break
                    await call.write(request)
                    answer = await call.read()
                    if answer is grpc.aio.EOF:
                        errors += 1
                        return
                    if answer.error_message:
                        errors += 1
                    latencies.append(time.perf_counter() - start)
                await call.done_writing()
            except grpc.aio.AioRpcError:
                errors += 1

        caller = stream if args.stream else unary
        began = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - began
    return summary(latencies, errors, elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target")
    parser.add_argument("model")
    parser.add_argument("--input", default="input")
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("-c", "--concurrency", type=int, default=1)
    parser.add_argument("-d", "--duration", type=float, default=10.0)
    parser.add_argument("--stream", action="store_true", help="one ModelStreamInfer stream per caller")
    args = parser.parse_args()
    try:
        import uvloop

        result = uvloop.run(run(args))
    except ImportError:  # pragma: no cover
        result = asyncio.run(run(args))
    print("GRPCJSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

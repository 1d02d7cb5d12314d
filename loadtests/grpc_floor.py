"""The gRPC floor: a gRPC server whose ModelInfer returns a fixed response.

Measures what Python gRPC itself costs (and what ``grpc_load.py`` can drive) with no model
and no server code of ours. ``python loadtests/grpc_floor.py PORT`` serves with grpc.aio on
uvloop (as our server does); ``--sync`` serves with grpc's thread-pool server instead
(``grpc.server`` + ``ThreadPoolExecutor``, ``--threads`` workers), for comparison.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc


def fixed_response() -> service_pb2.ModelInferResponse:
    response = service_pb2.ModelInferResponse(model_name="bench", model_version="1")
    output = response.outputs.add()
    output.name, output.datatype = "probability", "FP32"
    output.shape.append(1)
    response.raw_output_contents.append(np.float32(0.5).tobytes())
    return response


class FixedServicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self._response = fixed_response()

    async def ModelInfer(self, request: object, context: object) -> object:
        return self._response


class SyncFixedServicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self._response = fixed_response()

    def ModelInfer(self, request: object, context: object) -> object:
        return self._response


async def serve(port: int) -> None:
    server = grpc.aio.server()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(FixedServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def serve_sync(port: int, threads: int) -> None:
    server = grpc.server(ThreadPoolExecutor(max_workers=threads))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(SyncFixedServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--sync", action="store_true", help="grpc.server with a thread pool")
    parser.add_argument("--threads", type=int, default=8, help="thread-pool size with --sync")
    args = parser.parse_args()
    if args.sync:
        serve_sync(args.port, args.threads)
    else:
        import uvloop

        uvloop.run(serve(args.port))


if __name__ == "__main__":
    main()

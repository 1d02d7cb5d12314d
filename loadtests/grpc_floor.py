"""The gRPC floor: a gRPC server whose ModelInfer returns a fixed response.

Measures what Python gRPC itself costs (and what ``grpc_load.py`` can drive) with no model
and no server code of ours. ``python loadtests/grpc_floor.py PORT`` serves with grpc.aio on
uvloop (as our server does); ``--sync`` serves with grpc's thread-pool server instead
(``grpc.server`` + ``ThreadPoolExecutor``, ``--threads`` workers), for comparison;
``--grpclib`` serves with grpclib (pure-asyncio gRPC on the h2 library) on uvloop. grpclib is
not a project dependency: run that mode with the python of the bench's own virtualenv
(``bench.py``'s ``PEER_PINS["grpclib"]``, made by ``grpc_servers.py``), which has grpclib,
protobuf and uvloop only, so this module imports grpcio, numpy and tritonclient only in the
modes that use them.
"""

from __future__ import annotations

import argparse
import importlib.util
import struct
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The project's compiled schema (serving/protocol/grpc/stubs.py), loaded by path so the
# grpclib venv needs neither the serving package nor its dependencies: only protobuf.
OIP_V2_PB2 = ROOT / "serving" / "protocol" / "grpc" / "generated" / "oip_v2_pb2.py"
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"


def fixed_response(pb: ModuleType) -> Any:
    """One row's answer, built from ``pb``'s ``ModelInferResponse`` (tritonclient's or ours:
    the same message on the wire)."""
    response = pb.ModelInferResponse(model_name="bench", model_version="1")
    output = response.outputs.add()
    output.name, output.datatype = "probability", "FP32"
    output.shape.append(1)
    response.raw_output_contents.append(struct.pack("<f", 0.5))
    return response


def serve_aio(port: int) -> None:
    import grpc
    import uvloop
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    class FixedServicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
        def __init__(self) -> None:
            self._response = fixed_response(service_pb2)

        async def ModelInfer(self, request: object, context: object) -> object:
            return self._response

    async def serve() -> None:
        server = grpc.aio.server()
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(FixedServicer(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    uvloop.run(serve())


def serve_sync(port: int, threads: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    class SyncFixedServicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
        def __init__(self) -> None:
            self._response = fixed_response(service_pb2)

        def ModelInfer(self, request: object, context: object) -> object:
            return self._response

    server = grpc.server(ThreadPoolExecutor(max_workers=threads))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(SyncFixedServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def load_oip_v2() -> ModuleType:
    spec = importlib.util.spec_from_file_location("oip_v2_pb2", OIP_V2_PB2)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def serve_grpclib(port: int) -> None:
    """grpclib's server with the ModelInfer route mapped by hand (``__mapping__`` is what
    grpclib's generated base classes provide), so no grpclib code generation is needed."""
    import uvloop
    from grpclib.const import Cardinality, Handler
    from grpclib.server import Server, Stream

    pb = load_oip_v2()
    response = fixed_response(pb)

    async def model_infer(stream: Stream[Any, Any]) -> None:
        await stream.recv_message()
        await stream.send_message(response)

    class FixedService:
        def __mapping__(self) -> dict[str, Handler]:
            handler = Handler(
                model_infer, Cardinality.UNARY_UNARY, pb.ModelInferRequest, pb.ModelInferResponse
            )
            return {MODEL_INFER: handler}

    async def serve() -> None:
        server = Server([FixedService()])
        await server.start("127.0.0.1", port)
        await server.wait_closed()

    uvloop.run(serve())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    stack = parser.add_mutually_exclusive_group()
    stack.add_argument("--sync", action="store_true", help="grpc.server with a thread pool")
    stack.add_argument("--grpclib", action="store_true", help="grpclib on uvloop (bench venv)")
    parser.add_argument("--threads", type=int, default=8, help="thread-pool size with --sync")
    args = parser.parse_args()
    if args.sync:
        serve_sync(args.port, args.threads)
    elif args.grpclib:
        serve_grpclib(args.port)
    else:
        serve_aio(args.port)


if __name__ == "__main__":
    main()

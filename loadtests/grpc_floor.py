"""The gRPC floor: a grpc.aio server whose ModelInfer returns a fixed response.

Measures what Python gRPC itself costs (and what ``grpc_load.py`` can drive) with no model
and no server code of ours. ``python loadtests/grpc_floor.py PORT``
"""

from __future__ import annotations

import sys

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc


class FixedServicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        response = service_pb2.ModelInferResponse(model_name="bench", model_version="1")
        output = response.outputs.add()
        output.name, output.datatype = "probability", "FP32"
        output.shape.append(1)
        response.raw_output_contents.append(np.float32(0.5).tobytes())
        self._response = response

    async def ModelInfer(self, request: object, context: object) -> object:
        return self._response


async def serve(port: int) -> None:
    server = grpc.aio.server()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(FixedServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    import uvloop

    uvloop.run(serve(int(sys.argv[1])))

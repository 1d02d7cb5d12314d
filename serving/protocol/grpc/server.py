"""gRPC adapter (OIP v2 GRPCInferenceService). Placeholder until the gRPC issue lands:
starting it with a port >= 0 is an error, so nothing pretends to serve gRPC."""

from __future__ import annotations

from typing import Any

from serving.dataplane import DataPlane
from serving.settings import Settings


async def start_grpc_server(settings: Settings, dataplane: DataPlane) -> Any:
    raise NotImplementedError("gRPC is not implemented yet; start with --grpc-port -1")

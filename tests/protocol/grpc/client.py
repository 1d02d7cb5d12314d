"""A minimal OIP v2 gRPC client over plain grpcio and the server's own message classes."""

from __future__ import annotations

from typing import Any

import grpc

from serving.protocol.grpc.stubs import SERVICE, load


class OipClient:
    def __init__(self, target: str) -> None:
        self.pb = load()
        self.channel = grpc.insecure_channel(target)

    def call(self, method: str, request: Any, **kwargs: Any) -> Any:
        desc = self.pb.service.methods_by_name[method]
        rpc = self.channel.unary_unary(
            f"/{SERVICE}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=self.pb.messages[desc.output_type.name].FromString,
        )
        return rpc(request, **kwargs)

    def close(self) -> None:
        self.channel.close()

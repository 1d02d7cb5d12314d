"""The OIP v2 gRPC schema this server owns: typed message classes from ``oip_v2.proto``.

``serving/protocol/grpc/oip_v2.proto`` (package ``inference``, service
``GRPCInferenceService``) is wire-compatible with KServe's and Triton's; ``generated/`` holds
grpcio-tools' modules and ``.pyi`` stubs for it, committed and checked against the .proto by the
tests (``scripts/gen_proto.py`` regenerates them). The generated module keeps its descriptors
in a pool of its own, not protobuf's default pool, where ``tritonclient.grpc`` and ``kserve``
register the same ``inference.*`` names: the server runs beside either client in one process.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2

from serving.protocol.grpc.generated import oip_v2_pb2 as pb

SERVICE = "inference.GRPCInferenceService"


class Stubs:
    """The schema as one object the servicer is given: message classes as typed attributes
    (``stubs.ModelInferResponse(...)`` is a ``pb.ModelInferResponse``), by name in
    ``messages``, the service descriptor, and the pool server reflection answers from."""

    ServerLiveRequest = pb.ServerLiveRequest
    ServerLiveResponse = pb.ServerLiveResponse
    ServerReadyRequest = pb.ServerReadyRequest
    ServerReadyResponse = pb.ServerReadyResponse
    ModelReadyRequest = pb.ModelReadyRequest
    ModelReadyResponse = pb.ModelReadyResponse
    ServerMetadataRequest = pb.ServerMetadataRequest
    ServerMetadataResponse = pb.ServerMetadataResponse
    ModelMetadataRequest = pb.ModelMetadataRequest
    ModelMetadataResponse = pb.ModelMetadataResponse
    ModelInferRequest = pb.ModelInferRequest
    ModelInferResponse = pb.ModelInferResponse
    InferParameter = pb.InferParameter
    InferTensorContents = pb.InferTensorContents
    ModelStreamInferResponse = pb.ModelStreamInferResponse
    ModelConfigRequest = pb.ModelConfigRequest
    ModelConfigResponse = pb.ModelConfigResponse
    ModelStatisticsRequest = pb.ModelStatisticsRequest
    ModelStatisticsResponse = pb.ModelStatisticsResponse
    StatisticDuration = pb.StatisticDuration
    InferStatistics = pb.InferStatistics
    InferBatchStatistics = pb.InferBatchStatistics
    ModelStatistics = pb.ModelStatistics
    ModelInput = pb.ModelInput
    ModelOutput = pb.ModelOutput
    ModelVersionPolicy = pb.ModelVersionPolicy
    ModelDynamicBatching = pb.ModelDynamicBatching
    ModelParameter = pb.ModelParameter
    ModelConfig = pb.ModelConfig
    RepositoryModelLoadRequest = pb.RepositoryModelLoadRequest
    RepositoryModelLoadResponse = pb.RepositoryModelLoadResponse
    RepositoryModelUnloadRequest = pb.RepositoryModelUnloadRequest
    RepositoryModelUnloadResponse = pb.RepositoryModelUnloadResponse

    def __init__(self) -> None:
        self.service: ServiceDescriptor = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
        self.messages: Mapping[str, type[Message]] = {
            name: getattr(pb, name) for name in pb.DESCRIPTOR.message_types_by_name
        }
        # Reflection describes the health service too, so both files go into one pool (a copy:
        # the generated module's own pool stays exactly what protoc wrote).
        self.pool = descriptor_pool.DescriptorPool()
        self.pool.AddSerializedFile(health_pb2.DESCRIPTOR.serialized_pb)
        self.pool.AddSerializedFile(pb.DESCRIPTOR.serialized_pb)


@cache
def load() -> Stubs:
    """The schema, built once per process."""
    return Stubs()

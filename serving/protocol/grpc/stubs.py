"""OIP v2 protobuf messages, built from the ``kserve`` package's generated module.

The descriptor is the one KServe's Python server compiles (``grpc_predict_v2.proto``, package
``inference``, with the model-repository RPCs). We read its serialized bytes out of
``kserve/protocol/grpc/grpc_predict_v2_pb2.py`` and build the message classes in a *private*
descriptor pool instead of importing that module, because:

- importing anything under ``kserve`` runs ``kserve/__init__`` (≈1.4 s, ~1,500 modules) in
  every worker;
- the default pool allows one definition per symbol, so ``inference.ModelInferRequest`` from
  KServe and from ``tritonclient.grpc`` cannot live in one process. A private pool keeps the
  server (and its tests) independent of whichever client is imported next to it.

Nothing is generated or copied into this repository; the service handlers are built from the
service descriptor in ``server.py``.
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_health.v1 import health_pb2

SERVICE = "inference.GRPCInferenceService"


@dataclass(frozen=True)
class Stubs:
    pool: descriptor_pool.DescriptorPool
    service: Any
    """The ``inference.GRPCInferenceService`` ServiceDescriptor."""
    messages: dict[str, Any]
    """Message classes by short name: ``messages["ModelInferRequest"]``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self.messages[name]
        except KeyError:
            raise AttributeError(name) from None


def _kserve_descriptor_bytes() -> bytes:
    spec = importlib.util.find_spec("kserve")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("gRPC needs the 'kserve' package for the OIP v2 protobuf descriptor")
    path = Path(next(iter(spec.submodule_search_locations))) / "protocol/grpc/grpc_predict_v2_pb2.py"
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "AddSerializedFile"
            and node.args
        ):
            value = ast.literal_eval(node.args[0])
            if isinstance(value, bytes):
                return value
    raise RuntimeError(f"no serialized descriptor found in {path}")


@cache
def load() -> Stubs:
    """Build (once per process) the pool and message classes."""
    pool = descriptor_pool.DescriptorPool()
    # The health service goes into the same pool so reflection can describe it too.
    pool.AddSerializedFile(health_pb2.DESCRIPTOR.serialized_pb)
    serialized = _kserve_descriptor_bytes()
    pool.AddSerializedFile(serialized)
    fd = pool.FindFileByName(descriptor_pb2.FileDescriptorProto.FromString(serialized).name)
    messages: dict[str, Any] = {}
    for name, desc in fd.message_types_by_name.items():
        messages[name] = message_factory.GetMessageClass(desc)
    return Stubs(pool, fd.services_by_name["GRPCInferenceService"], messages)

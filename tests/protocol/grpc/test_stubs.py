"""Our OIP v2 gRPC schema (serving/protocol/grpc/oip_v2.proto) against the references it must
stay wire-compatible with, field by field; the generated modules against the .proto; and the
private descriptor pool that lets the server share a process with tritonclient or kserve."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_tools import protoc
from packaging.requirements import Requirement

from serving.protocol.grpc.generated import oip_v2_pb2 as pb
from serving.protocol.grpc.stubs import SERVICE, Stubs, load
from tests.references import reference
from tests.server_process import ROOT

Fields = dict[int, tuple[str, str, str, str, str | None]]


def compile_reference(proto: Path, out: Path) -> descriptor_pb2.FileDescriptorProto:
    """The reference .proto compiled by protoc (grpcio-tools), as a FileDescriptorProto."""
    target = out / f"{proto.stem}.binpb"
    well_known = resources.files("grpc_tools") / "_proto"
    argv = ["protoc", f"-I{proto.parent}", f"-I{well_known}", f"--descriptor_set_out={target}", proto.name]
    assert protoc.main(argv) == 0, f"protoc could not compile {proto}"
    (fd,) = descriptor_pb2.FileDescriptorSet.FromString(target.read_bytes()).file
    return fd


def ours() -> descriptor_pb2.FileDescriptorProto:
    return descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb)


def messages(fd: descriptor_pb2.FileDescriptorProto) -> dict[str, descriptor_pb2.DescriptorProto]:
    """Every message by full name, nested ones (and map entries) included."""
    found: dict[str, descriptor_pb2.DescriptorProto] = {}

    def walk(prefix: str, message: descriptor_pb2.DescriptorProto) -> None:
        name = f"{prefix}.{message.name}"
        found[name] = message
        for nested in message.nested_type:
            walk(name, nested)

    for message in fd.message_type:
        walk(f".{fd.package}", message)
    return found


def fields(message: descriptor_pb2.DescriptorProto) -> Fields:
    """number -> (name, type, label, referenced type, oneof): what decides the wire format and
    the names clients use; comments, json names and options elsewhere do not."""
    label = descriptor_pb2.FieldDescriptorProto.Label.Name
    kind = descriptor_pb2.FieldDescriptorProto.Type.Name
    return {
        f.number: (
            f.name,
            kind(f.type),
            label(f.label),
            f.type_name,
            message.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") else None,
        )
        for f in message.field
    }


def methods(fd: descriptor_pb2.FileDescriptorProto) -> dict[str, tuple[str, str, bool, bool]]:
    (service,) = fd.service
    return {
        m.name: (m.input_type, m.output_type, m.client_streaming, m.server_streaming) for m in service.method
    }


@pytest.fixture(scope="module")
def kserve_spec(tmp_path_factory: pytest.TempPathFactory) -> descriptor_pb2.FileDescriptorProto:
    """The OIP v2 gRPC spec as KServe publishes it (docs/predict-api/v2)."""
    return compile_reference(reference("kserve/oip_v2_grpc_predict_v2.proto"), tmp_path_factory.mktemp("ref"))


@pytest.fixture(scope="module")
def kserve_python(tmp_path_factory: pytest.TempPathFactory) -> descriptor_pb2.FileDescriptorProto:
    """What KServe's Python server compiles: the spec plus the model-repository RPCs."""
    return compile_reference(
        reference("kserve/oip_v2_grpc_predict_v2_kserve_python.proto"), tmp_path_factory.mktemp("ref")
    )


def test_same_package_service_and_syntax(kserve_spec: descriptor_pb2.FileDescriptorProto) -> None:
    mine = ours()
    assert (mine.package, mine.syntax) == (kserve_spec.package, kserve_spec.syntax) == ("inference", "proto3")
    assert [s.name for s in mine.service] == [s.name for s in kserve_spec.service] == ["GRPCInferenceService"]
    assert f"{mine.package}.{mine.service[0].name}" == SERVICE


def test_every_spec_message_matches_field_by_field(kserve_spec: descriptor_pb2.FileDescriptorProto) -> None:
    mine, spec = messages(ours()), messages(kserve_spec)
    assert len(spec) >= 20  # the top-level messages, their nested tensors and the map entries
    for name, message in spec.items():
        assert name in mine, f"{name} is in the OIP spec but not in oip_v2.proto"
        assert fields(mine[name]) == fields(message), name
        assert mine[name].options.map_entry == message.options.map_entry, name
        assert [o.name for o in mine[name].oneof_decl] == [o.name for o in message.oneof_decl], name


def test_every_spec_rpc_matches(kserve_spec: descriptor_pb2.FileDescriptorProto) -> None:
    mine, spec = methods(ours()), methods(kserve_spec)
    assert {name: mine.get(name) for name in spec} == spec
    assert list(mine)[: len(spec)] == list(spec)  # same order: reflection lists them as written


def test_repository_extension_matches_kserve_python_server(
    kserve_python: descriptor_pb2.FileDescriptorProto, kserve_spec: descriptor_pb2.FileDescriptorProto
) -> None:
    """Beyond the spec: KServe's model-repository extension, exactly as its server compiles
    it, and Triton's extensions (test_triton_extensions_match_triton); nothing is ours alone."""
    mine, python = messages(ours()), messages(kserve_python)
    extra = set(mine) - set(messages(kserve_spec))
    repository = {n for n in python if ".Repository" in n}
    assert repository <= extra
    for name in repository:
        assert fields(mine[name]) == fields(python[name]), name
    ours_methods, theirs = methods(ours()), methods(kserve_python)
    assert {name: ours_methods.get(name) for name in theirs} == theirs
    assert set(ours_methods) - set(theirs) == set(TRITON_RPCS)


TRITON_RPCS = ("ModelStreamInfer", "ModelConfig", "ModelStatistics")


def test_triton_extensions_match_triton(
    tmp_path: Path,
    kserve_python: descriptor_pb2.FileDescriptorProto,
    kserve_spec: descriptor_pb2.FileDescriptorProto,
) -> None:
    """Streaming, model configuration and statistics: the RPCs as Triton declares them, and
    every message we declare for them (a subset of Triton's fields: the ones we fill) with
    Triton's names, numbers, types, labels and oneofs, so tritonclient parses what we send."""
    service = compile_reference(reference("triton/grpc_service.proto"), tmp_path)
    config = compile_reference(reference("triton/model_config.proto"), tmp_path)
    triton = messages(service) | messages(config)
    mine = messages(ours())
    extra = set(mine) - set(messages(kserve_python))
    assert {n.rsplit(".", 1)[-1] for n in extra} >= {
        "ModelStreamInferResponse", "ModelStatisticsResponse", "ModelConfigResponse", "ModelConfig"
    }  # fmt: skip
    checked = 0
    for name in extra:
        assert name in triton, f"{name} is not a Triton message"
        theirs = fields(triton[name])
        for number, field in fields(mine[name]).items():
            assert theirs.get(number) == field, f"{name} field {number}"
            checked += 1
        assert mine[name].options.map_entry == triton[name].options.map_entry, name
    assert checked >= 40
    triton_methods = methods(service)
    assert {name: methods(ours())[name] for name in TRITON_RPCS} == {
        n: triton_methods[n] for n in TRITON_RPCS
    }
    (data_type,) = [e for e in ours().enum_type if e.name == "DataType"]
    (theirs_enum,) = [e for e in config.enum_type if e.name == "DataType"]
    assert [(v.name, v.number) for v in data_type.value] == [(v.name, v.number) for v in theirs_enum.value]


def test_core_messages_agree_with_triton(
    tmp_path: Path, kserve_spec: descriptor_pb2.FileDescriptorProto
) -> None:
    """tritonclient speaks Triton's superset of the spec: every field of ours that Triton also
    defines has the same number, name, type and label (Triton adds fields and RPCs we lack)."""
    triton = messages(compile_reference(reference("triton/grpc_service.proto"), tmp_path))
    mine = messages(ours())
    checked = 0
    for name in messages(kserve_spec):
        theirs = fields(triton[name])
        for number, field in fields(mine[name]).items():
            assert theirs.get(number) == field, f"{name} field {number}"
            checked += 1
    assert checked >= 50


def test_reference_comparison_catches_a_renumbered_field(
    kserve_spec: descriptor_pb2.FileDescriptorProto,
) -> None:
    changed = ours()
    request = next(m for m in changed.message_type if m.name == "ModelInferRequest")
    raw = next(f for f in request.field if f.name == "raw_input_contents")
    raw.number = 8
    spec = messages(kserve_spec)[".inference.ModelInferRequest"]
    assert fields(messages(changed)[".inference.ModelInferRequest"]) != fields(spec)


def test_generated_modules_match_the_proto() -> None:
    """scripts/gen_proto.py --check: the committed modules are what grpcio-tools makes of the
    committed .proto (with the installed grpcio-tools, pinned in the lock)."""
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--check"], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_protobuf_bounds_follow_the_gencode() -> None:
    """The runtime protobuf must not be older than the gencode (it refuses to import it) and
    stays within the gencode's major version (protobuf's cross-version guarantee)."""
    source = (ROOT / "serving" / "protocol" / "grpc" / "generated" / "oip_v2_pb2.py").read_text()
    match = re.search(r"ValidateProtobufRuntimeVersion\(\s*\S+,\s*(\d+),\s*(\d+),\s*(\d+),", source)
    assert match, "no runtime version check in the generated module"
    major, minor, patch = (int(g) for g in match.groups())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (protobuf,) = [Requirement(r) for r in project["dependencies"] if Requirement(r).name == "protobuf"]
    assert {str(s) for s in protobuf.specifier} == {f">={major}.{minor}.{patch}", f"<{major + 1}"}


def test_messages_live_in_a_private_pool() -> None:
    assert pb.DESCRIPTOR.pool is not descriptor_pool.Default()
    assert pb.DESCRIPTOR.pool.FindFileByName("oip_v2.proto") is pb.DESCRIPTOR
    with pytest.raises(KeyError):
        descriptor_pool.Default().FindFileByName("oip_v2.proto")


@pytest.mark.parametrize(
    "client",
    ["tritonclient.grpc", "kserve.protocol.grpc.grpc_predict_v2_pb2"],
)
@pytest.mark.parametrize("ours_first", [True, False])
def test_server_schema_imports_beside_client_libraries(client: str, ours_first: bool) -> None:
    """Both clients register ``inference.*`` in the default pool; ours must not collide with
    them in either import order (a fresh interpreter each, so the order is real)."""
    imports = ["import serving.protocol.grpc.server", f"import {client}"]
    if not ours_first:
        imports.reverse()
    code = "; ".join(
        [
            *imports,
            "from serving.protocol.grpc.stubs import load",
            "m = load().ModelInferRequest(model_name='m', raw_input_contents=[b'x'])",
            "assert load().ModelInferRequest.FromString(m.SerializeToString()) == m",
        ]
    )
    run = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, cwd=ROOT
    )
    assert run.returncode == 0, run.stderr[-2000:]


def test_stubs_expose_every_message_typed() -> None:
    stubs: Any = load()
    assert isinstance(stubs, Stubs) and load() is stubs
    assert set(stubs.messages) == set(pb.DESCRIPTOR.message_types_by_name)
    for name, cls in stubs.messages.items():
        assert getattr(Stubs, name) is cls is getattr(pb, name)
    assert stubs.service.full_name == SERVICE
    assert [m.name for m in stubs.service.methods] == list(methods(ours()))
    # the reflection pool answers for our service and for grpc.health.v1
    assert stubs.pool.FindServiceByName(SERVICE).name == "GRPCInferenceService"
    assert stubs.pool.FindServiceByName("grpc.health.v1.Health").name == "Health"

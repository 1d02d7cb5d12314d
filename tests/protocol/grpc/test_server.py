"""The gRPC adapter against the real server: health, reflection, metadata, infer, error codes."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import xgboost as xgb
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from serving.protocol.grpc.server import InferenceServicer, build_handler
from serving.protocol.grpc.stubs import load
from serving.server import build
from serving.settings import Settings
from tests.protocol.grpc.client import OipClient
from tests.server_process import DEMO_REPO, ServerProcess, running_server
from tests.waiting import wait_until

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)


@pytest.fixture(scope="module")
def client(demo_server: ServerProcess) -> Iterator[OipClient]:
    c = OipClient(demo_server.grpc_target)
    yield c
    c.close()


def _iris_request(pb: Any, rows: np.ndarray = ROWS, **kwargs: Any) -> Any:
    req = pb.ModelInferRequest(model_name="iris-xgb", **kwargs)
    t = req.inputs.add(name="input", datatype="FP32", shape=list(rows.shape))
    t.contents.fp32_contents.extend(rows.ravel().tolist())
    return req


def test_health_service(demo_server: ServerProcess) -> None:
    with grpc.insecure_channel(demo_server.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as err:
            health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_describes_the_service(demo_server: ServerProcess) -> None:
    with grpc.insecure_channel(demo_server.grpc_target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="inference.GRPCInferenceService"),
        ]
        listed, described = list(stub.ServerReflectionInfo(iter(requests), timeout=5))
    names = {s.name for s in listed.list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names
    assert described.file_descriptor_response.file_descriptor_proto
    assert b"ModelInferRequest" in described.file_descriptor_response.file_descriptor_proto[0]


def test_server_and_model_metadata(client: OipClient) -> None:
    pb = client.pb
    assert client.call("ServerLive", pb.ServerLiveRequest()).live
    assert client.call("ServerReady", pb.ServerReadyRequest()).ready
    assert client.call("ModelReady", pb.ModelReadyRequest(name="iris-xgb", version="1")).ready
    meta = client.call("ServerMetadata", pb.ServerMetadataRequest())
    assert meta.name == "serving" and "binary_tensor_data" in meta.extensions
    model = client.call("ModelMetadata", pb.ModelMetadataRequest(name="iris-xgb"))
    assert list(model.versions) == ["1", "2"] and model.platform == "xgboost"
    assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [("input", "FP32", [-1, 4])]
    assert [(t.name, list(t.shape)) for t in model.outputs] == [("probabilities", [-1, 3])]


@pytest.mark.parametrize("version", ["1", "2"])
def test_typed_infer_matches_in_process_booster(client: OipClient, version: str) -> None:
    reply = client.call("ModelInfer", _iris_request(client.pb, id="g1", model_version=version), timeout=10)
    assert (reply.model_name, reply.model_version, reply.id) == ("iris-xgb", version, "g1")
    assert not reply.raw_output_contents  # typed in, typed out
    (out,) = reply.outputs
    assert (out.name, out.datatype, list(out.shape)) == ("probabilities", "FP32", [2, 3])
    booster = xgb.Booster(model_file=str(DEMO_REPO / f"iris-xgb/{version}/model.json"))
    np.testing.assert_allclose(
        np.array(out.contents.fp32_contents).reshape(2, 3), booster.inplace_predict(ROWS), rtol=1e-6
    )


def test_raw_infer(client: OipClient) -> None:
    req = client.pb.ModelInferRequest(model_name="iris-xgb", raw_input_contents=[ROWS.tobytes()])
    req.inputs.add(name="input", datatype="FP32", shape=[2, 4])
    reply = client.call("ModelInfer", req, timeout=10)
    probs = np.frombuffer(reply.raw_output_contents[0], dtype="<f4").reshape(2, 3)
    assert probs.argmax(axis=1).tolist() == [0, 2]


@pytest.mark.parametrize(
    ("mutate", "code", "details"),
    [
        (lambda r: setattr(r, "model_name", "no-such-model"), "NOT_FOUND", "not in the repository"),
        (lambda r: setattr(r, "model_version", "9"), "NOT_FOUND", "Request for unknown model: 'iris-xgb' version '9' is not found"),
        (lambda r: setattr(r, "model_version", "latest"), "INVALID_ARGUMENT", "positive integers"),
        (lambda r: setattr(r, "model_name", "../etc"), "INVALID_ARGUMENT", "invalid model name"),
        (lambda r: r.inputs[0].shape.__setitem__(1, 2), "INVALID_ARGUMENT", "needs 4"),
        (lambda r: (r.inputs[0].shape.__setitem__(0, 4), r.inputs[0].shape.__setitem__(1, 2)),
         "INVALID_ARGUMENT", "has shape [4, 2], model expects [-1, 4]"),
        (lambda r: setattr(r.inputs[0], "datatype", "FP64"), "INVALID_ARGUMENT", "fp64_contents has 0 values"),
        (lambda r: r.outputs.add(name="nope"), "INVALID_ARGUMENT", "unknown output 'nope'"),
    ],
)  # fmt: skip
def test_error_codes(client: OipClient, mutate: Any, code: str, details: str) -> None:
    req = _iris_request(client.pb)
    mutate(req)
    with pytest.raises(grpc.RpcError) as err:
        client.call("ModelInfer", req, timeout=10)
    assert err.value.code() == getattr(grpc.StatusCode, code)
    assert details in (err.value.details() or "")
    assert "Traceback" not in (err.value.details() or "")


def _iris_metric(server: ServerProcess, prefix: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix) and 'model="iris-xgb"' in line
    )


def _batches(server: ServerProcess) -> float:
    """Runtime predict calls so far for iris-xgb (count of the batch-size histogram)."""
    return _iris_metric(server, "serving_batch_size_count{")


def test_deadline_is_honoured(tmp_path: Path) -> None:
    """A request whose gRPC deadline passes while it waits for a batch is never computed."""
    repo = tmp_path / "repo"
    shutil.copytree(DEMO_REPO / "iris-xgb", repo / "iris-xgb")
    config = repo / "iris-xgb" / "config.yaml"
    config.write_text(config.read_text() + "batching:\n  enabled: true\n  max_queue_delay_us: 1000000\n")
    with running_server(repo, tmp_path / "logs") as server:
        client = OipClient(server.grpc_target)
        try:
            assert _batches(server) == 0
            start = time.monotonic()
            with pytest.raises(grpc.RpcError) as err:
                client.call("ModelInfer", _iris_request(client.pb), timeout=0.2)
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert time.monotonic() - start < 0.9  # did not wait out the 1 s batching delay
            # The batch's dispatch time (1 s after the request came) has passed once the batcher
            # took its queue: the queue depth is back to 0. Were the expired request computed
            # all the same, the count below, or the one after the next request, would show it.
            wait_until(
                lambda: _iris_metric(server, "serving_queue_depth{") == 0,
                10,
                message="the batcher never took its queue",
            )
            assert _batches(server) == 0  # the expired request was dropped, not computed
            reply = client.call("ModelInfer", _iris_request(client.pb), timeout=10)
            assert reply.outputs[0].name == "probabilities"
            assert _batches(server) == 1  # and the metric does count computed batches
        finally:
            client.close()


def test_model_control_needs_admin(client: OipClient) -> None:
    with pytest.raises(grpc.RpcError) as err:
        client.call("RepositoryModelLoad", client.pb.RepositoryModelLoadRequest(model_name="iris-xgb"))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "SERVING_ADMIN_TOKEN" in (err.value.details() or "")


def test_unexpected_error_is_internal_without_details(tmp_path: Path) -> None:
    """A bug (not a ServingError) becomes INTERNAL with a fixed message: no text, no traceback leaks."""
    stubs = load()
    parts = build(Settings(model_repo=tmp_path))

    class Broken(InferenceServicer):
        async def ServerLive(self, request: Any, context: Any) -> Any:
            raise KeyError("secret internal state")

    async def scenario() -> grpc.RpcError:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(
            (build_handler(Broken(parts.settings, parts.dataplane, stubs), stubs),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                rpc = channel.unary_unary(
                    "/inference.GRPCInferenceService/ServerLive",
                    request_serializer=lambda m: m.SerializeToString(),
                    response_deserializer=stubs.ServerLiveResponse.FromString,
                )
                try:
                    await rpc(stubs.ServerLiveRequest(), timeout=5)
                except grpc.RpcError as exc:
                    return exc
                raise AssertionError("expected an error")
        finally:
            await server.stop(None)
            parts.executor.shutdown()

    error: Any = asyncio.run(scenario())
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == "internal server error"


def test_grpc_with_two_workers(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(DEMO_REPO / "iris-xgb", repo / "iris-xgb")
    with running_server(repo, tmp_path / "logs", args=["--workers", "2"]) as server:
        pb = load()
        answers = []
        for _ in range(6):  # separate channels: the kernel spreads connections over workers
            c = OipClient(server.grpc_target)
            try:
                deadline = time.monotonic() + 30
                while True:  # a worker may still be loading when the first one is ready
                    try:
                        reply = c.call("ModelInfer", _iris_request(pb), timeout=5)
                        break
                    except grpc.RpcError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.2)
                answers.append(list(reply.outputs[0].contents.fp32_contents))
            finally:
                c.close()
        assert all(a == answers[0] for a in answers) and len(answers[0]) == 6


def test_an_over_size_message_reaches_the_edge_is_refused_and_counted(tmp_path: Path) -> None:
    """grpc's own limit sits above ours, so a message over SERVING_MAX_BODY_BYTES is refused by the
    adapter with our error (RESOURCE_EXHAUSTED) and counted like any request, never dropped by the
    library before the edge sees it."""
    env = {"SERVING_MAX_BODY_BYTES": "4096"}
    with running_server(DEMO_REPO, tmp_path / "logs", env=env) as server:
        client = OipClient(server.grpc_target)
        try:
            rows = np.ones((300, 4), dtype=np.float32)  # 1,200 floats: about 4.8 KB of fp32 contents
            big = _iris_request(client.pb, rows)
            assert 4096 < big.ByteSize() < 8192
            with pytest.raises(grpc.RpcError) as err:
                client.call("ModelInfer", big)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "SERVING_MAX_BODY_BYTES" in (err.value.details() or "")
            small = client.call("ModelInfer", _iris_request(client.pb))
            assert small.model_name == "iris-xgb"
        finally:
            client.close()
        text = httpx.get(f"{server.url}/metrics").text
    counted = [
        line
        for line in text.splitlines()
        if line.startswith("serving_requests_total{")
        and 'protocol="grpc"' in line
        and "RESOURCE_EXHAUSTED" in line
    ]
    assert len(counted) == 1 and counted[0].endswith(" 1.0"), counted

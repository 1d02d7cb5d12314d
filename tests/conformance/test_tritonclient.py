"""Triton's own clients (tritonclient.http and .grpc, JSON and binary) against the real server.

Every demo model must answer the same over REST JSON, REST binary and gRPC, and match the
model run in-process.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException

from tests.conformance.reference import IDS, MODELS, reference, sample
from tests.server_process import ServerProcess

Client = Any


@pytest.fixture(scope="module")
def http_client(demo_server: ServerProcess) -> Iterator[Client]:
    client = thttp.InferenceServerClient(f"127.0.0.1:{demo_server.http_port}")
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc_client(demo_server: ServerProcess) -> Iterator[Client]:
    client = tgrpc.InferenceServerClient(demo_server.grpc_target)
    yield client
    client.close()


def infer(
    mode: str, http: Client, grpc: Client, model: str, version: str, x: np.ndarray, outputs: list[str]
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """One request in ``mode`` (http-json, http-binary, grpc) -> (outputs by name, response header)."""
    lib, client = (tgrpc, grpc) if mode == "grpc" else (thttp, http)
    inp = lib.InferInput("input", list(x.shape), "FP32")
    wanted: list[Any]
    if mode == "grpc":
        inp.set_data_from_numpy(x)
        wanted = [lib.InferRequestedOutput(o) for o in outputs]
    else:
        binary = mode == "http-binary"
        inp.set_data_from_numpy(x, binary_data=binary)
        wanted = [lib.InferRequestedOutput(o, binary_data=binary) for o in outputs]
    result = client.infer(model, [inp], model_version=version, outputs=wanted, request_id="t1")
    header = result.get_response(as_json=True) if mode == "grpc" else result.get_response()
    return {o: result.as_numpy(o) for o in outputs}, header


@pytest.mark.parametrize(("model", "version", "features", "outputs"), MODELS, ids=IDS)
def test_every_wire_format_gives_identical_answers(
    http_client: Client, grpc_client: Client, model: str, version: str, features: int, outputs: list[str]
) -> None:
    x = sample(features)
    expected = reference(model, version, x)
    answers = {}
    for mode in ("http-json", "http-binary", "grpc"):
        got, header = infer(mode, http_client, grpc_client, model, version, x, outputs)
        assert header["model_name"] == model and header["model_version"] == version and header["id"] == "t1"
        if mode == "http-binary":  # outputs came back raw, not as JSON data
            assert all("data" not in o and o["parameters"]["binary_data_size"] > 0 for o in header["outputs"])
        for name in outputs:
            assert got[name].shape == expected[name].shape, (mode, name)
            assert got[name].dtype == expected[name].dtype, (mode, name)
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-6, atol=1e-7)
        answers[mode] = got
    for name in outputs:  # bit-identical across REST JSON, REST binary and gRPC
        assert np.array_equal(answers["http-json"][name], answers["http-binary"][name])
        assert np.array_equal(answers["http-json"][name], answers["grpc"][name])


@pytest.mark.parametrize("mode", ["http-json", "http-binary", "grpc"])
def test_requested_output_subset(http_client: Client, grpc_client: Client, mode: str) -> None:
    x = sample(30, rows=2)
    got, header = infer(mode, http_client, grpc_client, "cancer-onnx", "1", x, ["probabilities"])
    assert [o["name"] for o in header["outputs"]] == ["probabilities"]
    np.testing.assert_allclose(
        got["probabilities"], reference("cancer-onnx", "1", x)["probabilities"], rtol=1e-6
    )


def test_default_outputs_http_binary(http_client: Client) -> None:
    """No outputs named: tritonclient asks for binary_data_output and gets every output raw."""
    x = sample(64, rows=4)
    inp = thttp.InferInput("input", [4, 64], "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    result = http_client.infer("digits-mlp", [inp])
    expected = reference("digits-mlp", "1", x)
    np.testing.assert_array_equal(result.as_numpy("label"), expected["label"])
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected["probabilities"], rtol=1e-6)


@pytest.mark.parametrize("kind", ["http", "grpc"])
def test_readiness_and_metadata(http_client: Client, grpc_client: Client, kind: str) -> None:
    client = http_client if kind == "http" else grpc_client
    assert client.is_server_live() and client.is_server_ready()
    for model, version, _, _ in MODELS:
        assert client.is_model_ready(model)
        assert client.is_model_ready(model, version)
    assert not client.is_model_ready("iris-xgb", "7")
    server = client.get_server_metadata() if kind == "http" else client.get_server_metadata(as_json=True)
    assert server["name"] == "serving" and "binary_tensor_data" in server["extensions"]
    for model, version, features, outputs in MODELS:
        meta = (
            client.get_model_metadata(model, version)
            if kind == "http"
            else client.get_model_metadata(model, version, as_json=True)
        )
        assert meta["name"] == model and version in meta["versions"]
        (inp,) = meta["inputs"]
        assert inp["name"] == "input" and inp["datatype"] == "FP32"
        assert [int(d) for d in inp["shape"]] == [-1, features]  # JSON of int64 protobuf fields: strings
        assert [o["name"] for o in meta["outputs"]] == outputs


@pytest.mark.parametrize("kind", ["http", "grpc"])
def test_errors_reach_the_client(http_client: Client, grpc_client: Client, kind: str) -> None:
    lib, client = (thttp, http_client) if kind == "http" else (tgrpc, grpc_client)
    inp = lib.InferInput("input", [1, 5], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 5), dtype=np.float32))
    with pytest.raises(InferenceServerException, match="model expects"):
        client.infer("iris-xgb", [inp])
    with pytest.raises(InferenceServerException, match="not in the repository"):
        client.infer("no-such-model", [inp])

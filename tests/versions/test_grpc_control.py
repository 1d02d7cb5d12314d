"""The model control RPCs the OIP gRPC proto has (RepositoryModelLoad/Unload), with the
same bearer token as REST, and sticky routing keys that place a caller identically on
both protocols."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from tests.protocol.grpc.client import OipClient
from tests.server_process import running_server
from tests.versions.conftest import ENV, ROW, TOKEN, Client, iris_repo


def infer_request(pb: Any) -> Any:
    request = pb.ModelInferRequest(model_name="iris-xgb")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend(ROW)
    return request


def test_grpc_load_unload_and_sticky_keys(tmp_path: Path) -> None:
    repo = iris_repo(tmp_path / "repo", traffic={"weights": {1: 50, 2: 50}})
    with running_server(repo, tmp_path / "log", env=ENV) as server:
        client = OipClient(server.grpc_target)
        rest = Client(server.http_port)
        try:
            auth = (("authorization", f"Bearer {TOKEN}"),)
            for metadata, code in (
                ((), grpc.StatusCode.UNAUTHENTICATED),
                ((("authorization", "Bearer nope"),), grpc.StatusCode.UNAUTHENTICATED),
            ):
                with pytest.raises(grpc.RpcError) as err:
                    client.call(
                        "RepositoryModelUnload",
                        client.pb.RepositoryModelUnloadRequest(model_name="iris-xgb"),
                        metadata=metadata,
                    )
                assert err.value.code() == code
            assert client.call("ModelReady", client.pb.ModelReadyRequest(name="iris-xgb")).ready

            # one key lands on one version, whichever protocol carries it
            for key in (f"k{i}" for i in range(40)):
                reply = client.call(
                    "ModelInfer", infer_request(client.pb), metadata=(("x-routing-key", key),)
                )
                status, version, _, _ = rest.infer(headers={"x-routing-key": key})
                assert status == 200 and reply.model_version == version

            reply = client.call(
                "RepositoryModelUnload",
                client.pb.RepositoryModelUnloadRequest(model_name="iris-xgb"),
                metadata=auth,
            )
            assert reply.isUnloaded and reply.model_name == "iris-xgb"
            assert not client.call("ModelReady", client.pb.ModelReadyRequest(name="iris-xgb")).ready
            states = {r["state"] for r in httpx.get(f"{server.url}/v2/repository/index").json()}
            assert states == {"UNAVAILABLE"}
            with pytest.raises(grpc.RpcError) as err:
                client.call("ModelInfer", infer_request(client.pb))
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE

            reply = client.call(
                "RepositoryModelLoad",
                client.pb.RepositoryModelLoadRequest(model_name="iris-xgb"),
                metadata=auth,
            )
            assert reply.isLoaded
            assert client.call("ModelInfer", infer_request(client.pb)).model_version in {"1", "2"}
            with pytest.raises(grpc.RpcError) as err:
                client.call(
                    "RepositoryModelLoad",
                    client.pb.RepositoryModelLoadRequest(model_name="nope"),
                    metadata=auth,
                )
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
        finally:
            client.close()
            rest.close()

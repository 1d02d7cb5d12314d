"""Runs KServe's InferenceRESTClient and InferenceGRPCClient against a server; prints JSON.

A separate process on purpose: ``import kserve`` registers the ``inference.*`` protobuf symbols
in the default descriptor pool, and so does ``tritonclient.grpc``; the two cannot be imported
into one interpreter (protobuf raises "duplicate symbol"). test_kserve_clients.py runs this.

usage: python -m tests.conformance.kserve_client_run HTTP_URL GRPC_TARGET
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import httpx
import numpy as np
from grpc import RpcError
from kserve import InferenceGRPCClient, InferenceRESTClient, RESTConfig
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput

from tests.conformance.reference import MODELS, sample


def _request(model: str, version: str, x: np.ndarray, outputs: list[str], binary: bool) -> InferRequest:
    inp = InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    wanted = [RequestedOutput(o, parameters={"binary_data": binary}) for o in outputs]
    return InferRequest(model, [inp], request_id="k1", request_outputs=wanted, model_version=version)


def _outputs(response: Any) -> dict[str, Any]:
    return {
        o.name: {"datatype": o.datatype, "shape": list(o.shape), "data": o.as_numpy().tolist()}
        for o in response.outputs
    }


async def main(http_url: str, grpc_target: str) -> dict[str, Any]:
    results: dict[str, Any] = {"infer": [], "errors": {}}
    rest = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=10))
    grpc = InferenceGRPCClient(grpc_target, timeout=10)
    try:
        results["rest_ready"] = await rest.is_server_ready(http_url)
        results["rest_live"] = await rest.is_server_live(http_url)
        results["grpc_ready"] = await grpc.is_server_ready()
        results["grpc_live"] = await grpc.is_server_live()
        results["models_ready"] = {}
        for model, version, features, outputs in MODELS:
            results["models_ready"][f"{model}/{version}"] = [
                await rest.is_model_ready(http_url, model),
                await grpc.is_model_ready(model),
            ]
            x = sample(features)
            for mode in ("rest-json", "rest-binary", "grpc"):
                request = _request(model, version, x, outputs, binary=mode == "rest-binary")
                binary_wire = mode == "grpc"
                if mode == "grpc":
                    response = await grpc.infer(request)
                else:
                    # the REST client has no version argument: it posts to /v2/models/<m>/infer,
                    # so version-specific requests go to the versioned URL as a graph endpoint
                    if version == "1" and model == "iris-xgb":
                        continue
                    binary_wire = request.to_rest()[1] is not None  # a JSON-header length: binary body
                    response = await rest.infer(http_url, request, model_name=model)
                results["infer"].append(
                    {
                        "model": model,
                        "version": version,
                        "mode": mode,
                        "binary_wire": binary_wire,
                        "model_name": response.model_name,
                        "model_version": response.model_version,
                        "id": response.id,
                        "outputs": _outputs(response),
                    }
                )
        bad = _request("no-such-model", "", sample(4), ["probabilities"], binary=False)
        try:
            await rest.infer(http_url, bad, model_name="no-such-model")
        except httpx.HTTPStatusError as exc:
            results["errors"]["rest"] = [exc.response.status_code, exc.response.json()]
        try:
            await grpc.infer(bad)
        except RpcError as exc:
            results["errors"]["grpc"] = [exc.code().name, exc.details()]
    finally:
        await rest.close()
        await grpc.close()
    return results


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2]))))

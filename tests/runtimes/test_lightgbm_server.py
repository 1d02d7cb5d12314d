"""LightGBM boosters trained outside the server (binary, multiclass, regression) served by the real
server: outputs equal ``Booster.predict`` within 1e-6 over REST JSON, REST binary and gRPC, with
the fast path on and forced off (SERVING_FAST_PATH=false: the fallback CI must run); metadata and
the ``serving_predict_path`` metric say which path serves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.grpc as tgrpc

from serving.runtimes.fastpath import LIBRARY
from serving.runtimes.lightgbm import FAST
from tests.server_process import ServerProcess, start_server
from tests.tinymodels import train_lgbm, write_lgbm_model

N_FEATURES = 6
MODELS: dict[str, tuple[dict[str, Any], list[int]]] = {
    "lgbm-binary": ({"objective": "binary"}, [-1]),
    "lgbm-multiclass": ({"objective": "multiclass", "num_class": 3}, [-1, 3]),
    "lgbm-regression": ({"objective": "regression"}, [-1]),
}
X = np.random.default_rng(3).normal(size=(5, N_FEATURES)).astype(np.float32)
X[1, 2] = np.nan
X[2, :] = np.nan
X[3, 0] = 1e30


@pytest.fixture(scope="module")
def boosters(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    repo = tmp_path_factory.mktemp("lgbm-repo")
    trained = {}
    for name, (params, shape) in MODELS.items():
        trained[name] = train_lgbm(n_features=N_FEATURES, rounds=25, missing=0.05, **params)
        write_lgbm_model(repo, name, trained[name], shape)
    return repo, trained


@pytest.fixture(scope="module", params=[True, False], ids=["fast", "fast-path-off"])
def server(
    request: pytest.FixtureRequest,
    boosters: tuple[Path, dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, bool]]:
    fast = bool(request.param)
    env = {} if fast else {"SERVING_FAST_PATH": "false"}
    process = start_server(boosters[0], tmp_path_factory.mktemp("lgbm-server"), env=env)
    yield process, fast
    process.stop()


def _rest_json(server: ServerProcess, model: str, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    data = [None if np.isnan(v) else float(v) for v in x.ravel()]  # JSON has no NaN
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": data}]}
    response = httpx.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=10)
    if response.status_code == 400 and "null" in response.text:
        pytest.skip("JSON null is not a float on this server; NaN rows go over binary and gRPC")
    assert response.status_code == 200, response.text
    (out,) = response.json()["outputs"]
    return np.asarray(out["data"], dtype=np.float64).reshape(out["shape"])


def _rest_binary(server: ServerProcess, model: str, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    header = {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": list(x.shape),
                "parameters": {"binary_data_size": x.nbytes},
            }
        ],
        "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
    }
    head = orjson.dumps(header)
    response = httpx.post(
        f"{server.url}/v2/models/{model}/infer",
        content=head + x.tobytes(),
        headers={
            "Inference-Header-Content-Length": str(len(head)),
            "content-type": "application/octet-stream",
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text
    length = int(response.headers["Inference-Header-Content-Length"])
    (out,) = orjson.loads(response.content[:length])["outputs"]
    return np.frombuffer(response.content[length:], dtype="<f8").reshape(out["shape"])


def _grpc(server: ServerProcess, model: str, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    client = tgrpc.InferenceServerClient(server.grpc_target)
    try:
        inp = tgrpc.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer(model, [inp])
        got: np.ndarray[Any, Any] = result.as_numpy("output")
        return got
    finally:
        client.close()


@pytest.mark.parametrize("model", list(MODELS))
def test_every_wire_format_equals_booster_predict(
    server: tuple[ServerProcess, bool], boosters: tuple[Path, dict[str, Any]], model: str
) -> None:
    process, _ = server
    booster = boosters[1][model]
    finite = X[~np.isnan(X).any(axis=1)]
    np.testing.assert_allclose(_rest_json(process, model, finite), booster.predict(finite), rtol=0, atol=1e-6)
    for rows in (X[:1], X):
        expected = booster.predict(rows)
        for call in (_rest_binary, _grpc):
            got = call(process, model, rows)
            assert got.dtype == np.float64 and got.shape == expected.shape
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_metadata_and_metrics_name_the_path(server: tuple[ServerProcess, bool]) -> None:
    process, fast = server
    meta = httpx.get(f"{process.url}/v2/models/lgbm-binary", timeout=10).json()
    assert meta["platform"] == "lightgbm"
    state = meta["parameters"]["version_states"]["1"]
    small = FAST if fast else LIBRARY
    if fast:
        assert state["predict_path"] == {"small": {"path": FAST}, "large": {"path": LIBRARY}}
    else:
        reason = "the fast path is turned off (SERVING_FAST_PATH)"
        assert state["predict_path"] == {
            "small": {"path": LIBRARY, "reason": reason},
            "large": {"path": LIBRARY},
        }
    metrics = httpx.get(f"{process.url}/metrics", timeout=10).text
    assert (
        f'serving_predict_path{{batches="small",model="lgbm-binary",path="{small}",version="1"}} 1.0'
        in metrics
    )

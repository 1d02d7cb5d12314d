"""Counting at the edge, error order and HTTP conventions against a real server.

Every inference request that reaches a REST inference route or gRPC ``ModelInfer`` moves
``serving_requests_total`` by exactly one, with the outcome the client got, whatever
happened to it; unknown model names share one bounded label; the access log has a line for
each. An unknown model or version is reported before anything about the body, on every
protocol. (serving/protocol/edge.py, serving/protocol/rest/app.py, serving/protocol/grpc/server.py)
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest

from serving.labels import UNKNOWN_MODEL
from tests.protocol.grpc.client import OipClient
from tests.reliability.models import write_gather_model, write_good_model, write_slow_model
from tests.server_process import ServerProcess, rest_env, running_server

ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
Key = tuple[str, str, str, str, str]  # model, version, variant, protocol, outcome


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, rest_path: str) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("edge")
    write_good_model(root / "repo")
    write_gather_model(root / "repo")
    write_slow_model(root / "repo")
    write_slow_model(root / "repo", "slower", rounds=32)
    env = {
        "SERVING_PREDICT_THREADS": "1",
        "SERVING_MAX_INFLIGHT": "1",
        "SERVING_MAX_BODY_BYTES": "4096",
        "SERVING_ACCESS_LOG_SAMPLE_RATE": "1",
        **rest_env(rest_path),
    }
    with running_server(root / "repo", root / "logs", env=env) as srv:
        yield srv


def counts(server: ServerProcess) -> Counter[Key]:
    found: Counter[Key] = Counter()
    for line in httpx.get(f"{server.url}/metrics", timeout=10).text.splitlines():
        if line.startswith("serving_requests_total{"):
            labels = dict(
                part.split("=", 1)
                for part in line[len("serving_requests_total{") : line.rindex("}")].split(",")
            )
            key = tuple(labels[k].strip('"') for k in ("model", "version", "variant", "protocol", "outcome"))
            found[key] += int(float(line.rsplit(" ", 1)[1]))  # type: ignore[index]
    return found


def moved(server: ServerProcess, before: Counter[Key]) -> Counter[Key]:
    after = counts(server)
    return Counter({k: after[k] - before[k] for k in after if after[k] != before[k]})


def post(server: ServerProcess, path: str, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}{path}",
        content=body,
        headers={"content-type": "application/json", **headers},
        timeout=30,
    )


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "key"),
    [
        ("/v2/models/good/infer", b"{not json", {}, 400, ("good", "none", "stable", "rest", "4xx")),
        (
            "/v2/models/good/infer",
            json.dumps(
                {"inputs": [{"name": "x", "datatype": "FLOAT", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
            ).encode(),
            {},
            400,
            ("good", "none", "stable", "rest", "4xx"),
        ),
        (  # wrong shape: found by the signature check, after the version was chosen
            "/v2/models/good/infer",
            json.dumps(
                {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 5], "data": [1, 2, 3, 4, 5]}]}
            ).encode(),
            {},
            400,
            ("good", "1", "stable", "rest", "4xx"),
        ),
        (
            "/v2/models/no-such-model/infer",
            b"{not json",
            {},
            404,
            (UNKNOWN_MODEL, "none", "stable", "rest", "4xx"),
        ),
        (
            "/v2/models/good/infer",
            json.dumps(ROW).encode(),
            {"content-type": "text/plain"},
            415,
            ("good", "none", "stable", "rest", "4xx"),
        ),
        ("/v2/models/good/infer", b" " * 5000, {}, 413, ("good", "none", "stable", "rest", "4xx")),
        (
            "/v1/models/good:predict",
            b'{"instances": "no"}',
            {},
            400,
            ("good", "none", "stable", "rest", "4xx"),
        ),
        (  # a runtime fault (index out of range in the model): 500, under the version that failed
            "/v2/models/gather/infer",
            json.dumps(
                {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [100, 2, 3, 4]}]}
            ).encode(),
            {},
            500,
            ("gather", "1", "stable", "rest", "5xx"),
        ),
        ("/v2/models/good/infer", json.dumps(ROW).encode(), {}, 200, ("good", "1", "stable", "rest", "2xx")),
    ],
    ids=[
        "malformed-json",
        "bad-datatype",
        "wrong-shape",
        "unknown-model",
        "415",
        "413",
        "v1-body",
        "runtime-fault",
        "ok",
    ],
)
def test_each_rest_request_is_counted_once_with_its_outcome(
    server: ServerProcess, path: str, body: bytes, headers: dict[str, str], status: int, key: Key
) -> None:
    before = counts(server)
    response = post(server, path, body, **headers)
    assert response.status_code == status, response.text
    assert "error" in response.json() if status != 200 else True
    assert moved(server, before) == Counter({key: 1})


def test_unknown_names_share_one_bounded_label(server: ServerProcess) -> None:
    before = counts(server)
    for i in range(5):
        assert post(server, f"/v2/models/typo-{i}/infer", json.dumps(ROW).encode()).status_code == 404
    assert moved(server, before) == Counter({(UNKNOWN_MODEL, "none", "stable", "rest", "4xx"): 5})
    assert "typo-" not in httpx.get(f"{server.url}/metrics", timeout=10).text


def _hold_the_predict_thread(server: ServerProcess) -> threading.Thread:
    holder = threading.Thread(
        target=httpx.post, args=(f"{server.url}/v2/models/slower/infer",), kwargs={"json": ROW, "timeout": 60}
    )
    holder.start()
    deadline = time.monotonic() + 10
    while 'serving_inflight_requests{model="slower"} 1.0' not in httpx.get(f"{server.url}/metrics").text:
        assert time.monotonic() < deadline, "the holding request never arrived"
        time.sleep(0.005)
    return holder


def test_overload_and_deadline_are_counted(server: ServerProcess) -> None:
    holder = _hold_the_predict_thread(server)  # slower v1 is at max_inflight 1 now
    before = counts(server)
    overloaded = post(server, "/v2/models/slower/infer", json.dumps(ROW).encode())
    late = post(server, "/v2/models/slow/infer", json.dumps(ROW).encode(), **{"x-request-timeout-ms": "20"})
    holder.join()
    assert (overloaded.status_code, late.status_code) == (503, 504), (overloaded.text, late.text)
    delta = moved(server, before)
    delta.pop(("slower", "1", "stable", "rest", "2xx"), None)  # the holder, if it finished
    assert delta == Counter(
        {("slower", "1", "stable", "rest", "5xx"): 1, ("slow", "1", "stable", "rest", "5xx"): 1}
    )


def _raw_infer(client: OipClient) -> Any:
    return client.channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )


def test_each_grpc_request_is_counted_once_with_its_code(server: ServerProcess) -> None:
    client = OipClient(server.grpc_target)
    try:
        pb = client.pb
        lacking = pb.ModelInferRequest(model_name="no-such-model")
        lacking.inputs.add(name="x", datatype="FP32", shape=[1, 4])  # no contents at all
        known_lacking = pb.ModelInferRequest(model_name="good")
        known_lacking.inputs.add(name="x", datatype="FP32", shape=[1, 4])
        ok = pb.ModelInferRequest(model_name="good")
        ok.inputs.add(name="x", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend([1, 2, 3, 4])
        cases = [
            (
                b"\xff\xff\xff",
                grpc.StatusCode.INVALID_ARGUMENT,
                (UNKNOWN_MODEL, "none", "stable", "grpc", "INVALID_ARGUMENT"),
            ),
            (
                lacking.SerializeToString(),
                grpc.StatusCode.NOT_FOUND,
                (UNKNOWN_MODEL, "none", "stable", "grpc", "NOT_FOUND"),
            ),
            (
                known_lacking.SerializeToString(),
                grpc.StatusCode.INVALID_ARGUMENT,
                ("good", "none", "stable", "grpc", "INVALID_ARGUMENT"),
            ),
            (ok.SerializeToString(), grpc.StatusCode.OK, ("good", "1", "stable", "grpc", "OK")),
        ]
        rpc = _raw_infer(client)
        for raw, code, key in cases:
            before = counts(server)
            try:
                rpc(raw, timeout=10)
                got = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                got = exc.code()
            assert got == code, key
            assert moved(server, before) == Counter({key: 1}), key
    finally:
        client.close()


# -- errors in the order a user needs them ------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/v2/models/no-such-model/infer", b'{"inputs": []}', {}),
        ("/v2/models/no-such-model/infer", b"garbage", {"content-type": "text/plain"}),
        ("/v2/models/no-such-model/infer", b"\x00\x01", {"inference-header-content-length": "999"}),
        ("/v2/models/good/versions/7/infer", b'{"inputs": []}', {}),
        ("/v1/models/no-such-model:predict", b'{"instances": "no"}', {}),
    ],
    ids=["json", "content-type", "binary", "unknown-version", "v1"],
)
def test_unknown_model_or_version_is_404_before_any_body_error(
    server: ServerProcess, path: str, body: bytes, headers: dict[str, str]
) -> None:
    response = post(server, path, body, **headers)
    assert response.status_code == 404, response.text
    assert "no-such-model" in response.json()["error"] or "version '7'" in response.json()["error"]


def test_content_type_comes_before_the_body(server: ServerProcess) -> None:
    response = post(server, "/v2/models/good/infer", b"{not json", **{"content-type": "text/plain"})
    assert response.status_code == 415


def test_grpc_unknown_version_is_not_found_before_tensor_errors(server: ServerProcess) -> None:
    client = OipClient(server.grpc_target)
    try:
        req = client.pb.ModelInferRequest(model_name="good", model_version="7")
        req.inputs.add(name="x", datatype="FP32", shape=[1, 4])
        with pytest.raises(grpc.RpcError) as err:
            client.call("ModelInfer", req, timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        client.close()


# -- HTTP conventions --------------------------------------------------------------------------
def test_wrong_method_on_a_known_route_is_405_with_allow(server: ServerProcess) -> None:
    infer = httpx.get(f"{server.url}/v2/models/good/infer", timeout=10)
    assert infer.status_code == 405 and infer.headers["allow"] == "POST"
    assert "use POST" in infer.json()["error"]
    live = httpx.post(f"{server.url}/v2/health/live", timeout=10)
    assert live.status_code == 405 and "GET" in live.headers["allow"]
    assert "error" in live.json()
    assert httpx.get(f"{server.url}/v2/no/such/route", timeout=10).status_code == 404
    # Ordinary routes answer through FastAPI with no deprecated API: the server log has no
    # Python warning (running_server checks it when the module's server stops).
    for path in ("/v2", "/v2/models/good", "/v2/health/ready", "/v1/models", "/v2/models/good/ready"):
        assert httpx.get(f"{server.url}{path}", timeout=10).status_code == 200, path


def test_access_log_has_a_line_for_every_counted_request(server: ServerProcess) -> None:
    # Last in this module: every request above was counted and logged.
    counted = sum(counts(server).values())
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith('{"ts"')]
    access = [line for line in lines if line.get("log") == "access"]
    assert counted > 20 and len(access) == counted
    unknown = [line for line in access if line["model"].startswith("typo-")]
    assert len(unknown) == 5 and all(line["status"] == 404 for line in unknown)
    assert {line["status"] for line in access} >= {200, 400, 404, 405, 413, 415, 500, 503, 504}

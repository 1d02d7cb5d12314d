"""End to end over HTTP: the real server (``serving serve``) on the demo repository and on tiny
repositories built in tmp_path, called with httpx. Every OIP v2 and KServe v1 REST endpoint,
predictions against the same artifacts run in-process, and every client error's status and
message."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import xgboost as xgb
import yaml
from sklearn.datasets import load_breast_cancer, load_digits, load_iris

from tests.server_process import DEMO_REPO, ServerProcess, rest_env, start_server
from tests.tinymodels import write_config, write_fixed_reshape_model, write_identity_model

CANCER_X = load_breast_cancer(return_X_y=True)[0].astype(np.float32)
DIGITS_X = (load_digits(return_X_y=True)[0] / 16.0).astype(np.float32)
IRIS_X = load_iris(return_X_y=True)[0].astype(np.float32)


def infer(
    server: ServerProcess,
    model: str,
    inputs: list[dict[str, Any]],
    version: str | None = None,
    **extra: Any,
) -> httpx.Response:
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    return httpx.post(server.url + path, json={"inputs": inputs, **extra}, timeout=30)


def tensor(
    name: str, rows: np.ndarray[Any, Any], datatype: str = "FP32", nested: bool = False
) -> dict[str, Any]:
    data = rows.tolist() if nested else rows.ravel().tolist()
    return {"name": name, "datatype": datatype, "shape": list(rows.shape), "data": data}


def outputs_of(response: httpx.Response) -> dict[str, np.ndarray[Any, Any]]:
    assert response.status_code == 200, response.text
    return {
        o["name"]: np.array(o["data"], dtype=np.float64).reshape(o["shape"])
        for o in response.json()["outputs"]
    }


def booster(model: str, version: str = "1") -> xgb.Booster:
    return xgb.Booster(model_file=str(DEMO_REPO / model / version / "model.json"))


def onnx_session(model: str) -> ort.InferenceSession:
    return ort.InferenceSession(
        str(DEMO_REPO / model / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    message: str = body["error"]
    assert "Traceback" not in message
    return message


# -- server-level endpoints -------------------------------------------------------------------


def test_server_metadata_and_health(demo_server: ServerProcess) -> None:
    meta = httpx.get(f"{demo_server.url}/v2").json()
    assert meta["name"] == "serving" and meta["version"]
    assert "model_repository" in meta["extensions"]
    live = httpx.get(f"{demo_server.url}/v2/health/live")
    assert live.status_code == 200 and live.json() == {"live": True}
    ready = httpx.get(f"{demo_server.url}/v2/health/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True}


def test_repository_index_lists_every_demo_version(demo_server: ServerProcess) -> None:
    response = httpx.post(f"{demo_server.url}/v2/repository/index")
    assert response.status_code == 200, response.text
    rows = {(r["name"], r["version"]): r["state"] for r in response.json()}
    assert rows == {
        ("cancer-lgbm", "1"): "READY",
        ("cancer-onnx", "1"): "READY",
        ("cancer-xgb", "1"): "READY",
        ("digits-mlp", "1"): "READY",
        ("iris-xgb", "1"): "READY",
        ("iris-xgb", "2"): "READY",
    }


@pytest.mark.parametrize("model", ["cancer-xgb", "cancer-lgbm", "cancer-onnx", "digits-mlp", "iris-xgb"])
def test_model_metadata_matches_config(demo_server: ServerProcess, model: str) -> None:
    config = yaml.safe_load((DEMO_REPO / model / "config.yaml").read_text())
    meta = httpx.get(f"{demo_server.url}/v2/models/{model}").json()
    assert meta["name"] == model
    assert (
        meta["platform"]
        == {"xgboost": "xgboost", "lightgbm": "lightgbm", "onnx": "onnxruntime_onnx"}[config["platform"]]
    )
    assert meta["inputs"] == config["inputs"]
    assert meta["outputs"] == config["outputs"]
    versions = sorted(p.name for p in (DEMO_REPO / model).iterdir() if p.is_dir())
    assert meta["versions"] == versions


def test_model_version_metadata_and_ready(demo_server: ServerProcess) -> None:
    meta = httpx.get(f"{demo_server.url}/v2/models/iris-xgb/versions/1")
    assert meta.status_code == 200 and meta.json()["versions"] == ["1"]
    ready = httpx.get(f"{demo_server.url}/v2/models/iris-xgb/ready")
    assert ready.status_code == 200 and ready.json() == {"name": "iris-xgb", "ready": True}
    ready_v = httpx.get(f"{demo_server.url}/v2/models/iris-xgb/versions/2/ready")
    assert ready_v.status_code == 200
    assert ready_v.json() == {"name": "iris-xgb", "version": "2", "ready": True}


def test_kserve_v1_model_and_list(demo_server: ServerProcess) -> None:
    response = httpx.get(f"{demo_server.url}/v1/models/cancer-xgb")
    assert response.status_code == 200 and response.json() == {"name": "cancer-xgb", "ready": True}
    listing = httpx.get(f"{demo_server.url}/v1/models").json()
    assert listing == {"models": ["cancer-lgbm", "cancer-onnx", "cancer-xgb", "digits-mlp", "iris-xgb"]}


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/nope",
        "/v2/models/nope/ready",
        "/v2/models/iris-xgb/versions/9",
        "/v2/models/iris-xgb/versions/9/ready",
        "/v1/models/nope",
    ],
)
def test_unknown_model_or_version_is_404(demo_server: ServerProcess, path: str) -> None:
    message = error_of(httpx.get(demo_server.url + path), 404)
    # Triton's wording, which Triton clients match on
    assert message.startswith("Request for unknown model: ")
    assert ("'nope' is not found" in message and "not in the repository" in message) or (
        "'iris-xgb' version '9' is not found" in message
    )


@pytest.mark.parametrize("name", ["a..b", "%2e%2e", ".hidden", "x%00y"])
def test_path_traversal_model_names_are_rejected(demo_server: ServerProcess, name: str) -> None:
    message = error_of(httpx.get(f"{demo_server.url}/v2/models/{name}/ready"), 400)
    assert "invalid model name" in message
    bad_version = httpx.get(f"{demo_server.url}/v2/models/iris-xgb/versions/..1/ready")
    assert "invalid model version" in error_of(bad_version, 400)


# -- predictions equal the artifacts run in-process --------------------------------------------


def test_cancer_xgb_matches_booster(demo_server: ServerProcess) -> None:
    rows = CANCER_X[:64]
    got = outputs_of(infer(demo_server, "cancer-xgb", [tensor("input", rows)]))["probability"]
    expected = booster("cancer-xgb").inplace_predict(rows)
    assert got.shape == (64,)
    # float32 printed by orjson round-trips exactly; 64 rows go through XGBoost itself (the
    # ONNX twin serves only below fast_path_max_rows), so bit for bit
    np.testing.assert_array_equal(got.astype(np.float32), expected)


def test_cancer_onnx_matches_onnxruntime(demo_server: ServerProcess) -> None:
    rows = CANCER_X[:64]
    got = outputs_of(infer(demo_server, "cancer-onnx", [tensor("input", rows, nested=True)]))
    label, probabilities = onnx_session("cancer-onnx").run(None, {"input": rows})
    np.testing.assert_array_equal(got["label"], label)
    np.testing.assert_allclose(got["probabilities"], probabilities, rtol=1e-6, atol=1e-7)


def test_digits_mlp_matches_onnxruntime(demo_server: ServerProcess) -> None:
    rows = DIGITS_X[:32]
    response = infer(demo_server, "digits-mlp", [tensor("input", rows)])
    doc = response.json()
    assert [(o["name"], o["datatype"], o["shape"]) for o in doc["outputs"]] == [
        ("label", "INT64", [32]),
        ("probabilities", "FP32", [32, 10]),
    ]
    got = outputs_of(response)
    label, probabilities = onnx_session("digits-mlp").run(None, {"input": rows})
    np.testing.assert_array_equal(got["label"], label)
    np.testing.assert_allclose(got["probabilities"], probabilities, rtol=1e-5, atol=1e-6)
    assert (got["label"] == load_digits(return_X_y=True)[1][:32]).mean() > 0.9


@pytest.mark.parametrize("version", [None, "1", "2"])
def test_iris_versions_match_their_boosters(demo_server: ServerProcess, version: str | None) -> None:
    response = infer(demo_server, "iris-xgb", [tensor("input", IRIS_X[::10])], version=version)
    assert response.json()["model_version"] == (version or "2")
    assert response.headers["x-model-version"] == (version or "2")
    got = outputs_of(response)["probabilities"]
    expected = booster("iris-xgb", version or "2").inplace_predict(IRIS_X[::10])
    assert got.shape == (15, 3)
    # 15 rows are below fast_path_max_rows: the ONNX twin answers, held to the library's
    # predict within the documented 1e-6 (docs/native-boosters.md)
    np.testing.assert_allclose(got.astype(np.float32), expected, rtol=0, atol=1e-6)


def test_native_xgboost_and_exported_onnx_agree(demo_server: ServerProcess) -> None:
    native = outputs_of(infer(demo_server, "cancer-xgb", [tensor("input", CANCER_X)]))["probability"]
    exported = outputs_of(infer(demo_server, "cancer-onnx", [tensor("input", CANCER_X)]))
    assert np.abs(native - exported["probabilities"][:, 1]).max() < 1e-5
    np.testing.assert_array_equal(exported["label"], (native > 0.5).astype(np.int64))


def test_kserve_v1_predict_matches_v2(demo_server: ServerProcess) -> None:
    rows = IRIS_X[:3]
    v1 = httpx.post(f"{demo_server.url}/v1/models/iris-xgb:predict", json={"instances": rows.tolist()})
    assert v1.status_code == 200, v1.text
    v2 = outputs_of(infer(demo_server, "iris-xgb", [tensor("input", rows)]))["probabilities"]
    np.testing.assert_array_equal(np.array(v1.json()["predictions"]), v2)
    cancer = httpx.post(
        f"{demo_server.url}/v1/models/cancer-xgb:predict", json={"instances": CANCER_X[:2].tolist()}
    )
    np.testing.assert_allclose(
        cancer.json()["predictions"], booster("cancer-xgb").inplace_predict(CANCER_X[:2]), rtol=0, atol=1e-6
    )


# -- request features -------------------------------------------------------------------------


def test_request_id_is_echoed_and_absent_id_is_omitted(demo_server: ServerProcess) -> None:
    with_id = infer(demo_server, "iris-xgb", [tensor("input", IRIS_X[:1])], id="req-42")
    assert with_id.json()["id"] == "req-42"
    assert "id" not in infer(demo_server, "iris-xgb", [tensor("input", IRIS_X[:1])]).json()


def test_flat_and_nested_data_give_the_same_answer(demo_server: ServerProcess) -> None:
    flat = infer(demo_server, "digits-mlp", [tensor("input", DIGITS_X[:3])])
    nested = infer(demo_server, "digits-mlp", [tensor("input", DIGITS_X[:3], nested=True)])
    assert flat.json()["outputs"] == nested.json()["outputs"]


def test_parameters_are_accepted(demo_server: ServerProcess) -> None:
    rows = tensor("input", IRIS_X[:1])
    rows["parameters"] = {"content_type": "np"}
    response = infer(demo_server, "iris-xgb", [rows], parameters={"priority": 1, "note": "x"})
    assert response.status_code == 200, response.text
    bad = infer(demo_server, "iris-xgb", [tensor("input", IRIS_X[:1])], parameters=[1])
    assert error_of(bad, 400) == "'parameters' must be an object"


def test_outputs_selection(demo_server: ServerProcess) -> None:
    only = infer(
        demo_server, "digits-mlp", [tensor("input", DIGITS_X[:2])], outputs=[{"name": "probabilities"}]
    )
    assert [o["name"] for o in only.json()["outputs"]] == ["probabilities"]
    both = infer(
        demo_server,
        "digits-mlp",
        [tensor("input", DIGITS_X[:2])],
        outputs=[{"name": "label"}, {"name": "probabilities"}],
    )
    assert [o["name"] for o in both.json()["outputs"]] == ["label", "probabilities"]


# -- client errors: status and message ----------------------------------------------------------


def post_raw(
    server: ServerProcess, path: str, body: bytes, content_type: str = "application/json"
) -> httpx.Response:
    return httpx.post(server.url + path, content=body, headers={"content-type": content_type})


def test_malformed_json(demo_server: ServerProcess) -> None:
    response = post_raw(demo_server, "/v2/models/iris-xgb/infer", b'{"inputs": [{"name": "input"')
    assert error_of(response, 400).startswith("request body is not valid JSON")
    response = post_raw(demo_server, "/v1/models/iris-xgb:predict", b"{instances")
    assert error_of(response, 400).startswith("request body is not valid JSON")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[]", "request body must be a JSON object with 'inputs'"),
        (b"{}", "'inputs' must be a non-empty list of tensors"),
        (b'{"inputs": [1]}', "inputs[0] must be an object with name, datatype, shape, data"),
        (
            b'{"inputs": [{"name": "input", "shape": [1, 4], "data": [1, 2, 3, 4]}]}',
            "inputs[0]: 'name' and 'datatype' must be strings",
        ),
        (
            b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4]}]}',
            "input 'input': 'data' is missing",
        ),
        (
            b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": "1x4", "data": []}]}',
            "input 'input': 'shape' must be a list of at most 16 integers",
        ),
        (
            b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, -4], "data": []}]}',
            "input 'input': shape [1, -4] must hold non-negative integers",
        ),
        (
            b'{"id": 5, "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}',
            "'id' must be a string",
        ),
        (
            b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}], "outputs": {"name": "x"}}',
            "'outputs' must be a list of {name} objects",
        ),
    ],
)
def test_malformed_requests(demo_server: ServerProcess, body: bytes, message: str) -> None:
    assert error_of(post_raw(demo_server, "/v2/models/iris-xgb/infer", body), 400) == message


def test_unknown_model_and_version_on_infer_are_404(demo_server: ServerProcess) -> None:
    rows = [tensor("input", IRIS_X[:1])]
    assert (
        error_of(infer(demo_server, "nope", rows), 404)
        == "Request for unknown model: 'nope' is not found (not in the repository)"
    )
    assert (
        error_of(infer(demo_server, "iris-xgb", rows, version="7"), 404)
        == "Request for unknown model: 'iris-xgb' version '7' is not found"
    )
    v1 = httpx.post(f"{demo_server.url}/v1/models/nope:predict", json={"instances": [[1, 2, 3, 4]]})
    assert error_of(v1, 404) == "Request for unknown model: 'nope' is not found (not in the repository)"


def test_wrong_datatype(demo_server: ServerProcess) -> None:
    response = infer(demo_server, "iris-xgb", [tensor("input", IRIS_X[:1].astype(np.int32), "INT32")])
    assert error_of(response, 400) == "input 'input' must be FP32, got INT32"
    unknown = infer(demo_server, "iris-xgb", [tensor("input", IRIS_X[:1], "FLOAT")])
    assert error_of(unknown, 400).startswith("unknown datatype 'FLOAT'; expected one of BOOL, BYTES, FP16")
    not_numbers = infer(
        demo_server,
        "iris-xgb",
        [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [1, "a", 2, 3]}],
    )
    assert error_of(not_numbers, 400) == (
        "input 'input': FP32 data must be JSON numbers; got the string \"a\" at position 1 (flat, row-major)"
    )


def test_wrong_shape(demo_server: ServerProcess) -> None:
    response = infer(demo_server, "iris-xgb", [tensor("input", np.zeros((2, 5), np.float32))])
    assert error_of(response, 400) == "input 'input' has shape [2, 5], model expects [-1, 4]"
    rank = infer(demo_server, "iris-xgb", [tensor("input", np.zeros((2, 2, 2), np.float32))])
    assert error_of(rank, 400) == "input 'input' has shape [2, 2, 2], model expects [-1, 4]"
    v1 = httpx.post(f"{demo_server.url}/v1/models/iris-xgb:predict", json={"instances": [[1, 2, 3]]})
    assert error_of(v1, 400) == "input 'input' has shape [1, 3], model expects [-1, 4]"


def test_data_length_does_not_match_shape(demo_server: ServerProcess) -> None:
    body = {"name": "input", "datatype": "FP32", "shape": [2, 4], "data": [1, 2, 3, 4]}
    assert error_of(infer(demo_server, "iris-xgb", [body]), 400) == (
        "input 'input': data has 4 elements but shape [2, 4] needs 8"
    )
    ragged = {"name": "input", "datatype": "FP32", "shape": [2, 4], "data": [[1, 2, 3, 4], [1, 2, 3]]}
    assert "not a well-formed FP32 tensor" in error_of(infer(demo_server, "iris-xgb", [ragged]), 400)
    huge = {"name": "input", "datatype": "FP32", "shape": [1 << 40, 4], "data": [1, 2, 3, 4]}
    assert "above the limit" in error_of(infer(demo_server, "iris-xgb", [huge]), 400)


def test_missing_and_extra_inputs(demo_server: ServerProcess) -> None:
    other = tensor("features", IRIS_X[:1])
    assert error_of(infer(demo_server, "iris-xgb", [other]), 400) == (
        "model 'iris-xgb' takes inputs ['input']: missing inputs ['input'], unexpected inputs ['features']"
    )
    assert error_of(infer(demo_server, "iris-xgb", [tensor("input", IRIS_X[:1]), other]), 400) == (
        "model 'iris-xgb' takes inputs ['input']: unexpected inputs ['features']"
    )
    twice = [tensor("input", IRIS_X[:1]), tensor("input", IRIS_X[:1])]
    assert error_of(infer(demo_server, "iris-xgb", twice), 400) == "input 'input' is given twice"


def test_unknown_output(demo_server: ServerProcess) -> None:
    response = infer(demo_server, "digits-mlp", [tensor("input", DIGITS_X[:1])], outputs=[{"name": "logits"}])
    assert error_of(response, 400) == (
        "unknown output 'logits' requested; model 'digits-mlp' gives ['label', 'probabilities']"
    )


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
def test_non_json_content_type_is_415(demo_server: ServerProcess, content_type: str) -> None:
    body = b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}'
    response = post_raw(demo_server, "/v2/models/iris-xgb/infer", body, content_type)
    assert error_of(response, 415) == f"content type '{content_type}' is not supported; send application/json"
    ok = post_raw(demo_server, "/v2/models/iris-xgb/infer", body, "application/json; charset=utf-8")
    assert ok.status_code == 200, ok.text


def test_unknown_route_is_a_json_404(demo_server: ServerProcess) -> None:
    assert error_of(httpx.get(f"{demo_server.url}/v2/nothing"), 404) == "no route for GET /v2/nothing"


# -- every OIP datatype through the codec and an ONNX Identity model ----------------------------

DATATYPE_SAMPLES: dict[str, list[Any]] = {
    "BOOL": [True, False, True],
    "UINT8": [0, 255, 7],
    "UINT16": [0, 65535, 7],
    "UINT32": [0, 4294967295, 7],
    "UINT64": [0, 18446744073709551615, 7],
    "INT8": [-128, 127, 0],
    "INT16": [-32768, 32767, 0],
    "INT32": [-2147483648, 2147483647, 0],
    "INT64": [-9223372036854775808, 9223372036854775807, 0],
    "FP16": [0.5, 65504.0, -2.0],
    "FP32": [0.1, 3.4e38, -2.0],
    "FP64": [0.1, 1e300, -2.5e-300],
    "BYTES": ["ab", "é ü", ""],
}


@pytest.fixture(scope="module")
def types_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One identity ONNX model per OIP datatype: ``id-<datatype>`` maps x [-1, 3] to y."""
    root = tmp_path_factory.mktemp("types-repo")
    for datatype in DATATYPE_SAMPLES:
        write_identity_model(root, f"id-{datatype.lower()}", datatype)
    server = start_server(root, root / "logs", grpc=False)
    yield server
    server.stop()


@pytest.mark.parametrize("datatype", sorted(DATATYPE_SAMPLES))
def test_every_datatype_round_trips(types_server: ServerProcess, datatype: str) -> None:
    data = DATATYPE_SAMPLES[datatype]
    body = {"name": "x", "datatype": datatype, "shape": [2, 3], "data": [data, data]}
    response = infer(types_server, f"id-{datatype.lower()}", [body])
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output == {"name": "y", "datatype": datatype, "shape": [2, 3], "data": data + data}


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        (
            "BOOL",
            [1, 0, 1],
            "input 'x': BOOL data must be true/false; got the number 1 at position 0 (flat, row-major)",
        ),
        ("UINT8", [0, 256, 1], "input 'x': values out of range for UINT8"),
        ("UINT8", [0, -1, 1], "input 'x': values out of range for UINT8"),
        ("UINT64", [-1, 18446744073709551615, 1], "input 'x': values out of range for UINT64"),
        ("INT8", [0, 128, 1], "input 'x': values out of range for INT8"),
        ("INT64", [0, 9223372036854775808, 1], "input 'x': values out of range for INT64"),
        (
            "INT32",
            [1.5, 2, 3],
            "input 'x': INT32 data must be integers; got the number 1.5 at position 0 (flat, row-major)",
        ),
        ("FP16", [0.5, 70000.0, 1], "input 'x': value out of range for FP16"),
        ("FP32", [0.5, 1e39, 1], "input 'x': value out of range for FP32"),
        (
            "FP32",
            [0.5, None, 1],
            "input 'x': FP32 data must be JSON numbers; got null at position 1 (flat, row-major)",
        ),
        (
            "BYTES",
            ["a", 1, "b"],
            "input 'x': BYTES data must be strings; got the number 1 at position 1 (flat, row-major)",
        ),
    ],
)
def test_values_that_do_not_fit_the_datatype(
    types_server: ServerProcess, datatype: str, data: list[Any], message: str
) -> None:
    body = {"name": "x", "datatype": datatype, "shape": [1, 3], "data": data}
    assert error_of(infer(types_server, f"id-{datatype.lower()}", [body]), 400) == message


# -- limits and broken models -----------------------------------------------------------------


def test_oversize_body_is_413(tmp_path: Path, rest_path: str) -> None:
    root = tmp_path / "repo"
    write_identity_model(root, "id-fp32", "FP32", width=4)
    env = {"SERVING_MAX_BODY_BYTES": "2048", **rest_env(rest_path)}
    server = start_server(root, tmp_path / "logs", grpc=False, env=env)
    try:
        small = infer(server, "id-fp32", [tensor("x", np.ones((2, 4), np.float32))])
        assert small.status_code == 200, small.text
        rows = np.full((100, 4), 0.123456, np.float32)
        big = infer(server, "id-fp32", [tensor("x", rows)])
        message = error_of(big, 413)
        assert message.startswith("request body of ") and message.endswith("bytes exceeds the limit of 2048")

        def chunks() -> Iterator[bytes]:  # no content-length: the limit applies while reading
            yield b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [100, 4], "data": ['
            for _ in range(100):
                yield b"0.123456, 0.123456, 0.123456, 0.123456, "
            yield b"0]}]}"

        streamed = httpx.post(
            f"{server.url}/v2/models/id-fp32/infer",
            content=chunks(),
            headers={"content-type": "application/json"},
        )
        assert error_of(streamed, 413) == "request body exceeds the limit of 2048 bytes"
    finally:
        server.stop()


def test_a_broken_model_does_not_stop_the_others(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    shutil.copytree(DEMO_REPO / "iris-xgb", root / "iris-xgb")
    # config that does not validate
    write_config(root / "bad-config", {"platform": "tensorflow", "inputs": [], "outputs": []})
    (root / "bad-config" / "1").mkdir()
    # valid config, corrupt model file
    write_identity_model(root, "corrupt", "FP32")
    (root / "corrupt" / "1" / "model.onnx").write_bytes(b"this is not a protobuf")
    # loads, but fails at run time for more than one row
    write_fixed_reshape_model(root, "faulty")
    server = start_server(root, tmp_path / "logs", grpc=False)
    try:
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
        good = infer(server, "iris-xgb", [tensor("input", IRIS_X[:2])])
        assert outputs_of(good)["probabilities"].shape == (2, 3)

        ready = httpx.get(f"{server.url}/v2/models/corrupt/ready")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        meta = httpx.get(f"{server.url}/v2/models/corrupt").json()
        state = meta["parameters"]["version_states"]["1"]
        assert (
            state["state"] == "FAILED" and state["reason"] == "corrupt/1/model.onnx: not a valid ONNX model"
        )
        failed = infer(server, "corrupt", [tensor("x", np.ones((1, 3), np.float32))])
        message = error_of(failed, 503)
        assert "has no ready version" in message and "not a valid ONNX model" in message

        meta_bad = error_of(httpx.get(f"{server.url}/v2/models/bad-config"), 503)
        assert "bad-config/config.yaml" in meta_bad and "platform" in meta_bad
        assert httpx.get(f"{server.url}/v2/models/bad-config/ready").status_code == 503

        index = {r["name"]: r for r in httpx.post(f"{server.url}/v2/repository/index").json()}
        assert index["iris-xgb"]["state"] == "READY"
        assert index["corrupt"]["state"] == "FAILED" and "model.onnx" in index["corrupt"]["reason"]
        assert index["bad-config"]["state"] == "UNAVAILABLE" and "platform" in index["bad-config"]["reason"]
        one = infer(server, "faulty", [tensor("x", np.ones((1, 3), np.float32))])
        assert outputs_of(one)["y"].tolist() == [[1.0, 1.0, 1.0]]
        fault = error_of(infer(server, "faulty", [tensor("x", np.ones((2, 3), np.float32))]), 500)
        assert fault.startswith("model 'faulty' version 1 failed: ") and "\n" not in fault

        log = server.log()
        assert "model iris-xgb version 2 ready" in log and "model corrupt version 1 failed to load" in log
        assert "model faulty version 1 failed at predict" in log and "Traceback" in log
    finally:
        server.stop()

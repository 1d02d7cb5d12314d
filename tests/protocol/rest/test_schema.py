"""serving/protocol/rest/schema.py, our description of the inference routes and messages (what
the REST reference page shows): a real server's answers validate against it, and it agrees with
KServe's OIP REST spec (a reference file, read where it is at hand, never copied in)."""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema
import yaml

from serving.protocol.rest.schema import INFERENCE_ROUTES, MESSAGES, json_schema
from tests.references import reference
from tests.server_process import ServerProcess

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def valid(name: str, document: Any) -> bool:
    try:
        jsonschema.validate(document, json_schema(name))
    except jsonschema.ValidationError:
        return False
    return True


def test_a_real_server_answers_in_the_described_messages(demo_server: ServerProcess) -> None:
    request = {
        "id": "r1",
        "inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": ROWS}],
        "outputs": [{"name": "probabilities"}],
    }
    assert valid("inference_request", request)
    for route in INFERENCE_ROUTES:
        path = route.path.format(model_name="iris-xgb", model_version="1")
        body = {"instances": ROWS} if route.request.startswith("v1") else request
        assert valid(route.request, body), route.path
        answer = httpx.post(demo_server.url + path, json=body, timeout=30)
        assert answer.status_code == 200, (path, answer.text)
        assert valid(route.response, answer.json()), (path, answer.json())
        wrong = httpx.post(demo_server.url + path.replace("iris-xgb", "nope"), json=body, timeout=30)
        assert wrong.status_code == 404 and valid("error_response", wrong.json())


def test_the_schemas_refuse_what_the_server_refuses(demo_server: ServerProcess) -> None:
    """The schemas are not vacuous: a request without inputs, or with a datatype the server does
    not know, is invalid in both."""
    for bad in (
        {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FLOAT", "data": ROWS[0]}]},
        {"outputs": [{"name": "label"}]},
    ):
        assert not valid("inference_request", bad)
        answer = httpx.post(f"{demo_server.url}/v2/models/iris-xgb/infer", json=bad, timeout=30)
        assert answer.status_code == 400 and valid("error_response", answer.json())
    assert not valid("inference_response", {"model_name": "m"})


def _oip_spec() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(reference("kserve/oip_v2_rest_predict_v2.yaml").read_text())
    return spec


def test_the_messages_agree_with_kserves_oip_spec() -> None:
    """Every OIP message we describe has the spec's fields, and requires what it requires, except
    a tensor's ``data``, which a binary tensor carries after the JSON (the binary extension)."""
    oip = _oip_spec()["components"]["schemas"]
    binary_only = {"request_input": {"data"}, "response_output": {"data"}}
    compared = 0
    for name, theirs in oip.items():
        ours = MESSAGES.get(name)
        if ours is None or not theirs.get("properties"):
            continue
        compared += 1
        assert set(theirs["properties"]) <= set(ours["properties"]), name
        assert set(theirs.get("required", [])) - binary_only.get(name, set()) == set(
            ours.get("required", [])
        ), name
    assert compared >= 5


def test_every_oip_route_is_served(demo_server: ServerProcess) -> None:
    """Each path of the OIP spec, with the demo model's name and version, answers 200 with the
    spec's method (the inference routes from schema.py, the others from FastAPI); the spec's
    ``/v2/`` is redirected to ``/v2``."""
    request = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ROWS[0]}]}
    for path, methods in _oip_spec()["paths"].items():
        url = demo_server.url + path.replace("${MODEL_NAME}", "iris-xgb").replace("${MODEL_VERSION}", "1")
        for method in methods:
            if method not in ("get", "post"):
                continue
            answer = httpx.request(
                method.upper(),
                url,
                json=request if method == "post" else None,
                timeout=30,
                follow_redirects=True,
            )
            assert answer.status_code == 200, (method, path, answer.text)

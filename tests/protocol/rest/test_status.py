"""The status page's routes on a real server (serving/protocol/rest/status.py): where they are
served, what they show for a failed version, and how they refuse what they do not serve.
The page in a browser: test_status_browser.py."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.server_process import ServerProcess, running_server
from tests.tinymodels import write_config, write_identity_model

TOKEN = "status-test-token-0123456789abcdef"


def test_off_on_the_public_port_by_default(demo_server: ServerProcess) -> None:
    for path in ("/status", "/status/data", "/status/models/iris-xgb", "/status/static/status.js"):
        answer = httpx.get(demo_server.url + path)
        assert answer.status_code == 404 and "error" in answer.json(), path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("status-repo")
    model_dir = write_identity_model(root, "ident", "FP32")
    (model_dir / "2").mkdir()
    (model_dir / "2" / "model.onnx").write_bytes(b"not an onnx file")
    write_config(
        model_dir,
        {
            "platform": "onnx",
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
            "version_policy": {"all": True},
        },
    )
    env = {"SERVING_STATUS_PAGE": "true", "SERVING_ADMIN_TOKEN": TOKEN}
    with running_server(root, tmp_path_factory.mktemp("status-logs"), grpc=False, env=env) as server:
        yield server


def test_the_page_shows_a_failed_version_with_its_public_reason(server: ServerProcess) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
    for _ in range(5):
        assert httpx.post(f"{server.url}/v2/models/ident/infer", json=body).status_code == 200
    deadline = time.monotonic() + 10
    while True:  # the figures cover full seconds: the current one shows once it is over
        data = httpx.get(f"{server.url}/status/data").json()
        (model,) = data["models"]
        versions = {v["version"]: v for v in model["versions"]}
        if versions["1"]["traffic"]["requests"] == 5 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert versions["1"]["state"] == "READY" and versions["1"]["traffic"]["requests"] == 5
    assert versions["2"]["state"] == "FAILED" and versions["2"]["reason"]
    assert str(server.log_path.parent) not in versions["2"]["reason"]  # the public reason: no paths
    assert model["split"] == {"1": 1.0} and data["process"]["workers"] == 1

    page = httpx.get(f"{server.url}/status")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    html = page.text
    assert "✗ FAILED" in html and versions["2"]["reason"].split("'")[0] in html
    assert '<tr data-version="1">' in html
    model_page = httpx.get(f"{server.url}/status/models/ident")
    assert model_page.status_code == 200 and 'data-source="/status/data?model=ident"' in model_page.text


def test_what_the_page_does_not_serve_is_a_clear_error(server: ServerProcess) -> None:
    cases = {
        ("GET", "/status/models/nope"): 404,
        ("GET", "/status/static/../settings.py"): 404,
        ("GET", "/status/static/nope.js"): 404,
        ("GET", "/status/data?model=bad%20name"): 400,
        ("POST", "/status"): 405,  # read-only
        ("DELETE", "/status/data"): 405,
    }
    for (method, path), status in cases.items():
        answer = httpx.request(method, server.url + path)
        assert answer.status_code == status and answer.json()["error"], (method, path, answer.text)
    script = httpx.get(f"{server.url}/status/static/status.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")


def test_traffic_changes_seen_by_the_page_are_listed(server: ServerProcess) -> None:
    before = httpx.get(f"{server.url}/status/data?model=ident").json()["models"][0]
    put = httpx.put(
        f"{server.url}/v2/models/ident/traffic",
        headers={"authorization": f"Bearer {TOKEN}"},
        json={"weights": {"1": 100}},
    )
    assert put.status_code == 200, put.text
    after = httpx.get(f"{server.url}/status/data?model=ident").json()["models"][0]
    assert after["generation"] == before["generation"] + 1 and after["changed_by"] == "admin-api"
    (event,) = after["events"]
    assert event["generation"] == after["generation"] and event["split"] == {"1": 1.0}
    page = httpx.get(f"{server.url}/status/models/ident").text
    assert f"generation {after['generation']}: v1 100 % (by admin-api)" in page

"""What unauthenticated callers learn about broken models: which file (relative to the
repository) and a short cause, never the repository's absolute path or a parser's own message.
The full reason is in the log and on the admin view (``/v2/repository/index/detail``).

One real server over a repository of broken models (every case of test_faults.py, links out
of the repository, a config that is not YAML); every public REST route and gRPC RPC is called
for every model and version, and each answer is searched for the forbidden text."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import onnxruntime as ort
import pytest
import xgboost as xgb
import yaml

from serving.repository.store import OUTSIDE
from tests.protocol.grpc.client import OipClient
from tests.reliability.test_faults import BROKEN, ROW, build_repo
from tests.server_process import ServerProcess, running_server
from tests.tinymodels import train_booster, write_identity_model, write_xgb_model

TOKEN = "public-reasons-test-token-0123456789"
BAD_YAML = "platform: onnx\ninputs: [{name: x, secret-line: [unclosed\n"


def _build(tmp: Path) -> tuple[Path, Path]:
    root = build_repo(tmp / "repo")
    outside = tmp / "outside"
    write_xgb_model(outside, "booster", train_booster())
    write_xgb_model(root, "file-link", train_booster())
    (root / "file-link/1/model.json").unlink()
    (root / "file-link/1/model.json").symlink_to(outside / "booster/1/model.json")
    write_identity_model(root, "folder-link", "FP32", width=4)
    (root / "folder-link/1/model.onnx").rename(outside / "model.onnx")
    (root / "folder-link/1").rmdir()
    (root / "folder-link/1").symlink_to(outside, target_is_directory=True)
    write_xgb_model(root, "passwd", train_booster())
    (root / "passwd/1/model.json").unlink()
    (root / "passwd/1/model.json").symlink_to("/etc/passwd")
    write_xgb_model(root, "good-xgb", train_booster())  # READY: its metadata has predict_path reasons
    write_identity_model(root, "bad-yaml", "FP32", width=4)
    (root / "bad-yaml/config.yaml").write_text(BAD_YAML)
    return root, outside


def _raw_parser_messages(root: Path) -> list[str]:
    """What the libraries themselves say about the broken files (first lines)."""
    messages: list[str] = []
    for path in (
        root / "corrupt/1/model.onnx",
        root / "unknown-op/1/model.onnx",
        root / "mixed/2/model.onnx",
    ):
        with pytest.raises(Exception) as onnx_error:
            ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        messages.append(str(onnx_error.value))
    with pytest.raises(xgb.core.XGBoostError) as xgb_error:
        xgb.Booster(model_file=str(root / "xgb-corrupt/1/model.ubj"))
    messages.append(str(xgb_error.value).splitlines()[0].split(": ", 1)[-1])
    with pytest.raises(yaml.YAMLError) as yaml_error:
        yaml.safe_load(BAD_YAML)
    messages.append(str(yaml_error.value))
    return [m.strip().splitlines()[0] for m in messages]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path, Path]]:
    tmp = tmp_path_factory.mktemp("public")
    root, outside = _build(tmp)
    with running_server(root, tmp / "logs", env={"SERVING_ADMIN_TOKEN": TOKEN}) as server:
        yield server, root, outside


MODELS = [*BROKEN, "good", "good-xgb", "file-link", "folder-link", "passwd", "bad-yaml"]


def _text(response: httpx.Response) -> str:
    """Every string in a JSON answer, unescaped (a quote in a leaked message stays a quote)."""

    def strings(doc: Any) -> Iterator[str]:
        if isinstance(doc, str):
            yield doc
        elif isinstance(doc, dict):
            for key, value in doc.items():
                yield key
                yield from strings(value)
        elif isinstance(doc, list):
            for item in doc:
                yield from strings(item)
        else:
            yield str(doc)

    try:
        return "\n".join(strings(response.json()))
    except ValueError:  # /metrics
        return response.text


def _rest_answers(server: ServerProcess) -> list[tuple[str, str]]:
    answers: list[tuple[str, str]] = []
    with httpx.Client(base_url=server.url, timeout=10) as http:

        def call(method: str, path: str, **kwargs: Any) -> None:
            response = http.request(method, path, **kwargs)
            answers.append((f"{method} {path} {response.status_code}", _text(response)))

        for method in ("GET", "POST"):
            call(method, "/v2/repository/index")
        call("POST", "/v2/repository/index", json={"ready": False})
        call("GET", "/v2/repository/index/detail")  # no token: refused, and says nothing
        call("GET", "/v2/repository/index/detail", headers={"Authorization": "Bearer wrong"})
        for path in ("/v2", "/v2/health/ready", "/v1/models", "/metrics"):
            call("GET", path)
        for name in MODELS:
            version = BROKEN[name][0] if name in BROKEN else "1"
            for base in (f"/v2/models/{name}", f"/v2/models/{name}/versions/{version}"):
                call("GET", base)
                call("GET", f"{base}/ready")
                call("POST", f"{base}/infer", json=ROW)
            call("GET", f"/v1/models/{name}")
            call("POST", f"/v1/models/{name}:predict", json={"instances": [[1, 2, 3, 4]]})
            call("POST", f"/v2/repository/models/{name}/load")
    return answers


def _grpc_answers(server: ServerProcess) -> list[tuple[str, str]]:
    client = OipClient(server.grpc_target)
    pb = client.pb
    answers: list[tuple[str, str]] = []

    def call(method: str, request: Any) -> None:
        try:
            answers.append((method, str(client.call(method, request, timeout=10))))
        except grpc.RpcError as exc:
            answers.append((f"{method} {exc.code()}", exc.details() or ""))

    try:
        call("ServerMetadata", pb.ServerMetadataRequest())
        for name in MODELS:
            version = BROKEN[name][0] if name in BROKEN else "1"
            for v in ("", version):
                call("ModelMetadata", pb.ModelMetadataRequest(name=name, version=v))
                call("ModelReady", pb.ModelReadyRequest(name=name, version=v))
                req = pb.ModelInferRequest(model_name=name, model_version=v)
                tensor = req.inputs.add(name="x", datatype="FP32", shape=[1, 4])
                tensor.contents.fp32_contents.extend([1, 2, 3, 4])
                call("ModelInfer", req)
            call("RepositoryModelLoad", pb.RepositoryModelLoadRequest(model_name=name))
    finally:
        client.close()
    return answers


def test_no_public_answer_reveals_paths_or_parser_messages(setup: tuple[ServerProcess, Path, Path]) -> None:
    server, root, outside = setup
    raw = _raw_parser_messages(root)
    forbidden = [str(root), str(root.resolve()), str(outside), "/etc/passwd", "root:", *raw]
    forbidden += ["ONNXRuntimeError", "Frobnicate", "XGBoost cannot load it", "Traceback"]
    answers = _rest_answers(server) + _grpc_answers(server)
    assert len(answers) > 200
    leaks = [(where, word) for where, text in answers for word in forbidden if word in text]
    assert leaks == []
    # The same facts are there for the admin: the check above could have failed.
    detail = httpx.get(
        f"{server.url}/v2/repository/index/detail", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert detail.status_code == 200
    for word in (str(root), str(outside), "Frobnicate", raw[3], "while parsing"):
        assert word in _text(detail), word
    log = server.log()
    assert str(root) in log and "Frobnicate" in log


PUBLIC_REASONS = {
    ("missing-file", "1"): "missing-file/1: no model.onnx for platform 'onnx'",
    ("corrupt", "1"): "corrupt/1/model.onnx: not a valid ONNX model",
    ("wrong-format", "1"): "wrong-format/1/model.onnx: not a valid ONNX model",
    ("xgb-corrupt", "1"): "xgb-corrupt/1/model.ubj: not a valid XGBoost model",
    ("unknown-op", "1"): "unknown-op/1/model.onnx: uses an operator onnxruntime does not know",
    ("ext-escape", "1"): "ext-escape/1/model.onnx: keeps tensor data outside the model's folder",
    ("mismatch", "1"): "mismatch/1/model.onnx: signature mismatch: ",
    ("file-link", "1"): f"file-link/1/model.json: {OUTSIDE}",
    ("folder-link", "1"): f"folder-link/1: {OUTSIDE}",
    ("passwd", "1"): f"passwd/1/model.json: {OUTSIDE}",
    ("bad-yaml", None): "bad-yaml/config.yaml: not readable YAML (line ",
}


def test_public_reasons_name_the_file_and_the_cause(setup: tuple[ServerProcess, Path, Path]) -> None:
    server, _, _ = setup
    rows = {(r["name"], r.get("version")): r for r in httpx.get(f"{server.url}/v2/repository/index").json()}
    for key, reason in PUBLIC_REASONS.items():
        assert rows[key]["state"] in ("FAILED", "UNAVAILABLE")
        assert rows[key]["reason"].startswith(reason), rows[key]
    # every other model serves
    assert httpx.post(f"{server.url}/v2/models/good/infer", json=ROW, timeout=5).status_code == 200
    assert httpx.post(f"{server.url}/v2/models/mixed/infer", json=ROW, timeout=5).status_code == 200
    meta = httpx.get(f"{server.url}/v2/models/file-link", timeout=5).json()
    assert meta["parameters"]["version_states"]["1"] == {
        "state": "FAILED",
        "reason": f"file-link/1/model.json: {OUTSIDE}",
    }
    infer = httpx.post(f"{server.url}/v2/models/folder-link/infer", json=ROW, timeout=5)
    assert infer.status_code == 503 and f"folder-link/1: {OUTSIDE}" in infer.json()["error"]


def test_a_link_out_added_at_run_time_is_refused_by_the_admin_load(
    setup: tuple[ServerProcess, Path, Path],
) -> None:
    server, root, outside = setup
    auth = {"Authorization": f"Bearer {TOKEN}"}
    (root / "good/2").symlink_to(outside, target_is_directory=True)
    try:
        load = httpx.post(
            f"{server.url}/v2/repository/models/good/load",
            headers=auth,
            json={"parameters": {"version": "2"}},
            timeout=30,
        )
        assert load.status_code == 500 and OUTSIDE in load.json()["error"]
        assert str(outside) in load.json()["error"]  # authenticated: the full reason
        rows = {
            (r["name"], r.get("version")): r for r in httpx.get(f"{server.url}/v2/repository/index").json()
        }
        assert rows[("good", "2")] == {
            "name": "good",
            "version": "2",
            "state": "FAILED",
            "reason": f"good/2: {OUTSIDE}",
        }
        assert rows[("good", "1")]["state"] == "READY"
    finally:
        (root / "good/2").unlink()

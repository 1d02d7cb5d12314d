"""Fault isolation: broken model files fail only their own version; a model that raises at
predict fails only that request; ``--strict`` refuses to start on any broken version."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from tests.protocol.grpc.client import OipClient
from tests.reliability.models import (
    write_external_data_model,
    write_gather_model,
    write_good_model,
    write_unknown_op_model,
)
from tests.server_process import ServerProcess, running_server, start_server
from tests.tinymodels import identity_onnx, spec, write_config

ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}

# model -> (version, words the FAILED reason must contain: the public cause class; the library's
# own message is in the log and the admin index only, see test_public_reasons.py)
BROKEN = {
    "missing-file": ("1", "no model.onnx"),
    "corrupt": ("1", "not a valid ONNX model"),
    "wrong-format": ("1", "not a valid ONNX model"),
    "xgb-corrupt": ("1", "not a valid XGBoost model"),
    "mismatch": ("1", "config.yaml"),
    "unknown-op": ("1", "uses an operator onnxruntime does not know"),
    "ext-escape": ("1", "outside the model's folder"),
    "mixed": ("2", "not a valid ONNX model"),
}


def _onnx_config(model_dir: Path, width: int = 4, datatype: str = "FP32") -> None:
    write_config(
        model_dir,
        {
            "platform": "onnx",
            "inputs": [spec("x", datatype, [-1, width])],
            "outputs": [spec("y", datatype, [-1, width])],
            "version_policy": {"all": True},
        },
    )


def build_repo(root: Path) -> Path:
    write_good_model(root)
    write_gather_model(root)
    write_unknown_op_model(root)
    write_external_data_model(root, "ext-ok", "weights/bias.bin")
    write_external_data_model(root, "ext-escape", "../../secret.bin")
    _onnx_config(root / "missing-file")
    (root / "missing-file" / "1").mkdir()
    _onnx_config(root / "corrupt")
    (root / "corrupt" / "1").mkdir()
    (root / "corrupt" / "1" / "model.onnx").write_bytes(b"\x08\x07garbage\xff\xfe" * 50)
    _onnx_config(root / "wrong-format")  # an XGBoost JSON model saved as model.onnx
    (root / "wrong-format" / "1").mkdir()
    (root / "wrong-format" / "1" / "model.onnx").write_text('{"learner": {"gradient_booster": {}}}')
    write_config(
        root / "xgb-corrupt",
        {
            "platform": "xgboost",
            "inputs": [spec("input", "FP32", [-1, 4])],
            "outputs": [spec("output", "FP32", [-1])],
        },
    )
    (root / "xgb-corrupt" / "1").mkdir()
    (root / "xgb-corrupt" / "1" / "model.ubj").write_bytes(b"{not ubjson" * 10)
    _onnx_config(root / "mismatch", width=5)  # the file is [-1, 4]
    (root / "mismatch" / "1").mkdir()
    (root / "mismatch" / "1" / "model.onnx").write_bytes(identity_onnx("FP32", 4))
    _onnx_config(root / "mixed")  # version 1 fine, version 2 corrupt
    for version, data in (("1", identity_onnx("FP32", 4)), ("2", b"corrupt")):
        (root / "mixed" / version).mkdir()
        (root / "mixed" / version / "model.onnx").write_bytes(data)
    return root


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repo(tmp_path_factory.mktemp("faults") / "repo")


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerProcess]:
    with running_server(repo, repo.parent / "logs") as srv:
        yield srv


def test_server_starts_and_reports_each_broken_version_with_its_reason(server: ServerProcess) -> None:
    assert httpx.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 200
    index = httpx.post(f"{server.url}/v2/repository/index", json={}, timeout=5).json()
    rows = {(row["name"], row.get("version")): row for row in index}
    for name, (version, words) in BROKEN.items():
        row = rows[(name, version)]
        assert row["state"] == "FAILED", row
        assert words in row["reason"], row
        ready = httpx.get(f"{server.url}/v2/models/{name}/versions/{version}/ready", timeout=5)
        assert ready.status_code == 503
        meta = httpx.get(f"{server.url}/v2/models/{name}", timeout=5)
        if meta.status_code == 200:
            state = meta.json()["parameters"]["version_states"][version]
            assert state["state"] == "FAILED" and words in state["reason"]
        else:  # a model that cannot even describe itself answers with the reason
            assert meta.status_code == 503 and words in meta.json()["error"]
        infer = httpx.post(f"{server.url}/v2/models/{name}/versions/{version}/infer", json=ROW, timeout=5)
        assert infer.status_code == 503, infer.text
        assert "error" in infer.json() and "Traceback" not in infer.text


def test_healthy_models_keep_serving_beside_broken_ones(server: ServerProcess) -> None:
    for name, expected in (("good", [1, 2, 3, 4]), ("ext-ok", [1, 3, 5, 7]), ("mixed", [1, 2, 3, 4])):
        response = httpx.post(f"{server.url}/v2/models/{name}/infer", json=ROW, timeout=5)
        assert response.status_code == 200, response.text
        assert response.json()["outputs"][0]["data"] == expected
    # The model whose v2 failed is still ready through v1.
    assert httpx.get(f"{server.url}/v2/models/mixed/ready", timeout=5).status_code == 200
    assert httpx.get(f"{server.url}/v2/models/mixed/versions/1/ready", timeout=5).status_code == 200


def test_a_model_that_raises_at_predict_fails_only_that_request(server: ServerProcess) -> None:
    bad = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [100, 2, 3, 4]}]}
    for _ in range(3):
        failed = httpx.post(f"{server.url}/v2/models/gather/infer", json=bad, timeout=5)
        assert failed.status_code == 500
        error = failed.json()["error"]
        assert "gather" in error and "Traceback" not in failed.text
        ok = httpx.post(f"{server.url}/v2/models/gather/infer", json=ROW, timeout=5)
        assert ok.status_code == 200
        assert ok.json()["outputs"][0]["data"] == [10, 20, 30, 40]
    assert httpx.get(f"{server.url}/v2/models/gather/ready", timeout=5).status_code == 200
    client = OipClient(server.grpc_target)
    try:
        req = client.pb.ModelInferRequest(model_name="gather")
        tensor = req.inputs.add(name="x", datatype="FP32", shape=[1, 4])
        tensor.contents.fp32_contents.extend([100, 2, 3, 4])
        with pytest.raises(grpc.RpcError) as err:
            client.call("ModelInfer", req, timeout=10)
        assert err.value.code() == grpc.StatusCode.INTERNAL
        assert "Traceback" not in (err.value.details() or "")
    finally:
        client.close()
    assert httpx.get(f"{server.url}/v2/health/live", timeout=5).status_code == 200


def test_strict_refuses_to_start_on_a_broken_version(repo: Path, tmp_path: Path) -> None:
    server = start_server(repo, tmp_path, args=["--strict"], wait_ready=False)
    try:
        code = server.proc.wait(60)
    finally:
        server.stop()
    assert code != 0
    log = server.log()
    assert "--strict:" in log and "ext-escape" in log and "Traceback" not in log


def test_strict_starts_when_every_version_loads(repo: Path, tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    for name in ("good", "gather", "ext-ok"):
        shutil.copytree(repo / name, clean / name)
    with running_server(clean, tmp_path / "logs", args=["--strict"], grpc=False) as server:
        assert httpx.post(f"{server.url}/v2/models/good/infer", json=ROW, timeout=5).status_code == 200

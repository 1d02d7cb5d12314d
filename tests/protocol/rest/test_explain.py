"""Explanations over REST: exact contributions that add up to the raw margin on every demo
booster (and the ONNX version exported from one), v1 and v2 routes agreeing, clear refusals."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.server_process import DEMO_REPO, running_server

ROWS = {
    "cancer": np.linspace(0.0, 1.0, 30, dtype=np.float32)[None, :]
    * np.array([[10.0], [20.0], [5.0]], dtype=np.float32),
    "iris": np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]], dtype=np.float32),
}
# (route, rows, classes): every demo model that is a booster or was exported from one
EXPLAINABLE = [
    ("cancer-xgb", "cancer", 1),
    ("cancer-lgbm", "cancer", 1),
    ("cancer-onnx", "cancer", 1),
    ("iris-xgb/versions/1", "iris", 3),
    ("iris-xgb/versions/2", "iris", 3),
]


def body(rows: np.ndarray) -> dict[str, object]:
    return {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": list(rows.shape), "data": rows.tolist()}]
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with running_server(
        DEMO_REPO, tmp_path_factory.mktemp("explain"), env={"SERVING_EXPLAIN_MAX_ROWS": "4"}
    ) as s:
        yield s


@pytest.mark.parametrize(("route", "rows", "classes"), EXPLAINABLE)
def test_contributions_add_up_to_the_margin(server, route: str, rows: str, classes: int) -> None:  # type: ignore[no-untyped-def]
    x = ROWS[rows]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        response = client.post(f"/v2/models/{route}/explain", json=body(x))
        assert response.status_code == 200, response.text
        doc = response.json()
        contributions = np.array(doc["contributions"])
        bias = np.array(doc["bias"])
        margin = np.array(doc["margin"])
        width = x.shape[1]
        assert len(doc["feature_names"]) == width
        assert contributions.shape == ((3, width) if classes == 1 else (3, classes, width))
        np.testing.assert_allclose(contributions.sum(-1) + bias, margin, rtol=1e-5, atol=1e-4)
        # the margin is the model's own: its transform gives the answer /infer gives
        answer = np.array(
            client.post(f"/v2/models/{route}/infer", json=body(x)).json()["outputs"][-1]["data"]
        )
        if classes == 1:
            probability = 1 / (1 + np.exp(-margin))
            np.testing.assert_allclose(answer.reshape(3, -1)[:, -1], probability, atol=1e-5)
        else:
            soft = np.exp(margin) / np.exp(margin).sum(axis=1, keepdims=True)
            np.testing.assert_allclose(answer.reshape(3, classes), soft, atol=1e-5)
        if "/" not in route:  # KServe v1 :explain gives the same explanation
            v1 = client.post(f"/v1/models/{route}:explain", json={"instances": x.tolist()})
            assert v1.status_code == 200, v1.text
            assert v1.json()["contributions"] == doc["contributions"]


def test_refusals_are_clear_and_counted(server) -> None:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        digits = client.post("/v2/models/digits-mlp/explain", json=body(np.zeros((1, 64), np.float32)))
        assert digits.status_code == 422
        assert "cannot explain" in digits.json()["error"]
        many = client.post("/v2/models/cancer-xgb/explain", json=body(np.zeros((5, 30), np.float32)))
        assert many.status_code == 400 and "at most 4 rows" in many.json()["error"]
        assert client.get("/v2/models/cancer-xgb/explain").status_code == 405
        assert client.post("/v2/models/nope/explain", json=body(ROWS["iris"])).status_code == 404
        wrong = client.post("/v2/models/cancer-xgb/explain", json=body(ROWS["iris"]))
        assert wrong.status_code == 400
        metrics = client.get("/metrics").text
        assert 'serving_explain_requests_total{model="digits-mlp",outcome="4xx",version="1"} 1.0' in metrics
        assert 'serving_explain_requests_total{model="cancer-xgb",outcome="4xx",version="1"}' in metrics


def test_exported_version_keeps_its_booster(tmp_path: Path) -> None:
    from serving.repository.export import export_booster

    report = export_booster(DEMO_REPO / "cancer-lgbm" / "1" / "model.txt", tmp_path, "lgbm-onnx")
    assert report.ok
    assert (tmp_path / "lgbm-onnx" / "1" / "booster.txt").read_bytes() == (
        DEMO_REPO / "cancer-lgbm" / "1" / "model.txt"
    ).read_bytes()


def test_an_onnx_version_with_its_booster_does_not_import_scikit_learn() -> None:
    """The source booster beside an exported ONNX version is loaded with XGBoost imported
    without scikit-learn (serving/runtimes/nosklearn.py): 140 MB an ONNX server never uses
    (issue 33: 295 MB resident for one such model before, 160 MB after, loadtests/memory.py).
    A fresh process loads the demo's cancer-onnx and still explains."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "import numpy as np\n"
        "from serving.modelconfig import load_config\n"
        "from serving.runtimes.onnx import OnnxRuntime\n"
        "from serving.settings import Settings\n"
        "folder = Path(sys.argv[1])\n"
        "runtime = OnnxRuntime(folder / '1' / 'model.onnx', load_config(folder / 'config.yaml'), Settings())\n"
        "assert runtime.explain is not None\n"
        "out = runtime.explain(np.zeros((1, 30), dtype=np.float32))\n"
        "print('sklearn' in sys.modules, len(out.contributions[0]))\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", script, str(DEMO_REPO / "cancer-onnx")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.split() == ["False", "30"]

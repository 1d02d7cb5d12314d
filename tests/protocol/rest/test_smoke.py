"""A first end-to-end check: the real server answers OIP v2 and KServe v1 for a demo model."""

from __future__ import annotations

import httpx
import numpy as np
import xgboost as xgb

from tests.server_process import DEMO_REPO, ServerProcess

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def test_v2_infer_matches_in_process_booster(demo_server: ServerProcess) -> None:
    body = {"id": "r1", "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4], "data": ROWS}]}
    response = httpx.post(f"{demo_server.url}/v2/models/iris-xgb/infer", json=body)
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["model_name"] == "iris-xgb" and doc["model_version"] == "2" and doc["id"] == "r1"
    expected = xgb.Booster(model_file=str(DEMO_REPO / "iris-xgb/2/model.json")).inplace_predict(
        np.array(ROWS, dtype=np.float32)
    )
    (output,) = doc["outputs"]
    assert output["shape"] == [2, 3] and output["datatype"] == "FP32"
    np.testing.assert_allclose(np.array(output["data"]).reshape(2, 3), expected, rtol=1e-6)


def test_v1_predict(demo_server: ServerProcess) -> None:
    response = httpx.post(f"{demo_server.url}/v1/models/iris-xgb:predict", json={"instances": ROWS[:1]})
    assert response.status_code == 200, response.text
    assert np.argmax(response.json()["predictions"][0]) == 0

"""Model monitoring in a real server: a profile made by ``serving profile`` from the training
table, in-distribution traffic, then one feature shifted by two standard deviations; a broken
profile leaves its version serving, unmonitored, with the reason; monitoring never changes an
answer."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.scoring.profiling import profile_version
from tests.server_process import DEMO_REPO, running_server

WINDOW_SECONDS = 3.0
SHIFTED = 0  # "mean radius"
TOKEN = "t" * 32


def cancer() -> np.ndarray:
    from sklearn.datasets import load_breast_cancer

    x: np.ndarray = load_breast_cancer(return_X_y=True)[0].astype(np.float32)
    return x


def training_table(path: Path, x: np.ndarray) -> Path:
    pq.write_table(pa.table({"input": pa.array(x.tolist(), pa.list_(pa.float32()))}), path)
    return path


def drift(url: str, model: str) -> tuple[dict[str, float], dict[str, float]]:
    """serving_feature_drift and serving_prediction_drift of ``model`` from /metrics."""
    features: dict[str, float] = {}
    outputs: dict[str, float] = {}
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("model") != model:
                continue
            if sample.name == "serving_feature_drift":
                features[sample.labels["feature"]] = sample.value
            elif sample.name == "serving_prediction_drift":
                outputs[sample.labels["output"]] = sample.value
    return features, outputs


def send(client: httpx.Client, model: str, rows: np.ndarray) -> list[float]:
    body = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": list(rows.shape), "data": rows.tolist()}]
    }
    response = client.post(f"/v2/models/{model}/infer", json=body)
    assert response.status_code == 200, response.text
    data: list[float] = response.json()["outputs"][0]["data"]
    return data


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("monitoring") / "repo"
    for name in ("cancer-xgb", "cancer-bad", "cancer-plain"):
        shutil.copytree(DEMO_REPO / "cancer-xgb", root / name)
    table = training_table(root.parent / "train.parquet", cancer())
    profile_version(root, "cancer-xgb", str(table))
    (root / "cancer-bad" / "1" / "profile.json").write_text(
        '{"format": "serving.profile", "format_version": 1}'
    )
    return root


def test_shifted_feature_drifts_others_stay(repo: Path, tmp_path: Path) -> None:
    env = {
        "SERVING_MONITORING_WINDOW_SECONDS": str(WINDOW_SECONDS),
        "SERVING_MONITORING_REFRESH_SECONDS": "0.2",
        "SERVING_MONITORING_MIN_ROWS": "200",
        "SERVING_ADMIN_TOKEN": TOKEN,
        "SERVING_STATUS_PAGE": "true",
    }
    x = cancer()
    rng = np.random.default_rng(0)
    with (
        running_server(repo, tmp_path / "logs", env=env) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        # 1. traffic drawn from the training rows: every figure below 0.1
        deadline = time.monotonic() + 20
        while True:
            for _ in range(4):
                send(client, "cancer-xgb", x[rng.integers(0, len(x), 64)])
            features, outputs = drift(server.url, "cancer-xgb")
            if len(features) == 30 and all(np.isfinite(v) for v in features.values()):
                break
            assert time.monotonic() < deadline, features
        assert max(features.values()) < 0.1, features
        assert max(outputs.values()) < 0.1, outputs
        in_distribution = max(features.values())

        # 2. "mean radius" shifted by two standard deviations: it rises above 0.25, the others
        #    stay below 0.1 (older in-distribution rows leave the window as the shifted arrive)
        shift = np.zeros(30, dtype=np.float32)
        shift[SHIFTED] = 2 * x[:, SHIFTED].std()
        deadline = time.monotonic() + 20
        name = "f0"
        while True:
            send(client, "cancer-xgb", x[rng.integers(0, len(x), 64)] + shift)
            features, outputs = drift(server.url, "cancer-xgb")
            others = {k: v for k, v in features.items() if k != name}
            if features[name] > 0.25 and max(others.values()) < 0.1:
                break
            assert time.monotonic() < deadline, features
        # the status page's model health shows the same figures (serving/protocol/rest/status.py)
        health = client.get("/status/data?model=cancer-xgb").json()["models"][0]["health"]
        assert health[f"v1 input drift (PSI): {name}"] > 0.1, health
        assert len([k for k in health if k.startswith("v1 input drift")]) == 30, health
        page = client.get("/status/models/cancer-xgb").text
        assert f"<dt>v1 input drift (PSI): {name}</dt>" in page and "and 21 more" in page
        print(
            f"in-distribution max PSI {in_distribution:.3f}; shifted f0 {features[name]:.3f}, "
            f"others max {max(others.values()):.3f} (window {WINDOW_SECONDS}s)"
        )

        # 3. a broken profile: the version serves, unmonitored, and says why
        same = x[:5]
        assert (
            send(client, "cancer-bad", same)
            == send(client, "cancer-plain", same)
            == send(client, "cancer-xgb", same)
        )
        detail = client.get(
            "/v2/repository/index/detail", headers={"authorization": f"Bearer {TOKEN}"}
        ).json()
        rows = {row["name"]: row for row in detail}
        assert rows["cancer-xgb"]["monitoring"] == "on"
        assert rows["cancer-bad"]["monitoring"].startswith("invalid: profile.json: it profiles 0 features")
        assert "monitoring" not in rows["cancer-plain"]
        metrics = client.get("/metrics").text
        assert 'serving_monitoring_profile{model="cancer-bad",state="invalid",version="1"} 1.0' in metrics
        assert 'serving_monitoring_profile{model="cancer-xgb",state="on",version="1"} 1.0' in metrics
        assert "monitoring off for it" in server.log()
        assert drift(server.url, "cancer-bad") == ({}, {})
        # a value far outside the training range: answered, and counted
        odd = x[:1].copy()
        odd[0, 2] = 1e30
        send(client, "cancer-xgb", odd)
        counter = 'serving_feature_out_of_range_total{feature="f2",model="cancer-xgb",version="1"}'
        deadline = time.monotonic() + 10
        while not any(
            line.startswith(counter) and float(line.split()[-1]) >= 1
            for line in client.get("/metrics").text.splitlines()
        ):
            assert time.monotonic() < deadline, "the out-of-range value was not counted"
            time.sleep(0.1)


def test_validate_repo_names_a_refused_profile(repo: Path) -> None:
    from serving.repository.store import validate_repository

    problems = validate_repository(repo)
    assert problems == [
        f"{repo / 'cancer-bad' / '1'}: profile.json: it profiles 0 features, the model takes 30"
    ]

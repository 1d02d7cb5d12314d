"""``serving batch --drift-report`` and ``--explain`` give the server's numbers for the same
rows: the drift gauges of a window holding exactly those rows, and the explain route's
contributions."""

from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from serving.scoring.local import BatchOptions, run_local
from serving.scoring.model import BatchError
from serving.scoring.profiling import profile_version
from tests.observability.test_monitoring import cancer, drift, send, training_table
from tests.server_process import DEMO_REPO, running_server
from tests.waiting import wait_until


def test_batch_drift_report_and_explanations_equal_the_servers(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(DEMO_REPO / "cancer-xgb", repo / "cancer-xgb")
    x = cancer()
    profile_version(repo, "cancer-xgb", str(training_table(tmp_path / "train.parquet", x)))
    rng = np.random.default_rng(3)
    rows = x[rng.integers(0, len(x), 300)]
    rows[:, 3] *= 1.5  # some drift, so the figures are not all near zero
    table = training_table(tmp_path / "rows.parquet", rows)

    report_path = tmp_path / "drift.json"
    options = BatchOptions(
        "cancer-xgb", repo, str(table), str(tmp_path / "scores.parquet"),
        batch_rows=64, workers=2, drift_report=str(report_path), explain=True,
    )  # fmt: skip
    run_local(options, io.StringIO())
    report = json.loads(report_path.read_text())
    assert report["rows"] == 300 and report["features"]["f3"]["psi"] > 0.25
    scores = pq.read_table(tmp_path / "scores.parquet")
    contrib_columns = [f"contrib_f{i}" for i in range(30)]
    contributions = np.stack([scores.column(c).to_numpy() for c in contrib_columns], axis=1)
    bias = scores.column("contrib_bias").to_numpy()
    probability = scores.column("probability").to_numpy()
    np.testing.assert_allclose(1 / (1 + np.exp(-(contributions.sum(1) + bias))), probability, atol=1e-5)

    env = {
        "SERVING_MONITORING_MIN_ROWS": "1",
        "SERVING_MONITORING_REFRESH_SECONDS": "0.2",
        "SERVING_MONITORING_WINDOW_SECONDS": "600",
    }
    with (
        running_server(repo, tmp_path / "logs", env=env) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        for part in np.array_split(rows, 7):  # other request sizes than the batch's
            send(client, "cancer-xgb", part)
        deadline = time.monotonic() + 15
        while (
            'serving_monitoring_rows_total{model="cancer-xgb",version="1"} 300.0'
            not in client.get("/metrics").text
        ):
            assert time.monotonic() < deadline, "the server did not count the 300 rows"
            time.sleep(0.1)

        def published() -> bool:  # a publication after the last rows were counted
            features, outputs = drift(server.url, "cancer-xgb")
            return outputs.get("probability") == pytest.approx(
                report["outputs"]["probability"]["psi"], abs=1e-12
            ) and all(
                features.get(n) == pytest.approx(f["psi"], abs=1e-12) for n, f in report["features"].items()
            )

        wait_until(published, 15, 0.1, "the drift gauges never showed the 300 rows")
        features, outputs = drift(server.url, "cancer-xgb")
        for name, figures in report["features"].items():
            assert features[name] == pytest.approx(figures["psi"], abs=1e-12), name
        assert outputs["probability"] == pytest.approx(report["outputs"]["probability"]["psi"], abs=1e-12)
        online = client.post(
            "/v2/models/cancer-xgb/explain",
            json={
                "inputs": [{"name": "input", "datatype": "FP32", "shape": [4, 30], "data": rows[:4].tolist()}]
            },
        ).json()
        assert online["feature_names"] == [f"f{i}" for i in range(30)]
        np.testing.assert_allclose(np.array(online["contributions"]), contributions[:4], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(np.array(online["bias"]), bias[:4], rtol=1e-6, atol=1e-6)


def test_drift_report_needs_a_profile(tmp_path: Path) -> None:
    options = BatchOptions(
        "digits-mlp", DEMO_REPO, str(training_table(tmp_path / "t.parquet", np.zeros((2, 64), np.float32))),
        str(tmp_path / "out.parquet"), drift_report=str(tmp_path / "d.json"),
    )  # fmt: skip
    with pytest.raises(BatchError, match=r"has no profile\.json"):
        run_local(options, io.StringIO())
    options.drift_report, options.explain = None, True
    with pytest.raises(BatchError, match="cannot explain"):
        run_local(options, io.StringIO())
    assert not (tmp_path / "out.parquet").exists()


def test_export_writes_the_profile_of_the_new_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from serving.cli import main

    table = training_table(tmp_path / "train.parquet", cancer())
    booster = DEMO_REPO / "cancer-xgb" / "1" / "model.json"
    assert (
        main(
            [
                "export",
                str(booster),
                "--repo",
                str(tmp_path / "repo"),
                "--model",
                "m",
                "--profile",
                str(table),
            ]
        )
        == 0
    )
    doc = json.loads((tmp_path / "repo" / "m" / "1" / "profile.json").read_text())
    assert doc["rows"] == 569 and len(doc["features"]) == 30
    assert [o["name"] for o in doc["outputs"]] == ["label", "probabilities[0]", "probabilities[1]"]
    assert (tmp_path / "repo" / "m" / "1" / "booster.json").is_file()
    assert "profile.json" in capsys.readouterr().out

"""Shadow traffic: the caller gets the primary's answer; differences show up in /metrics;
a full queue drops copies (counted) instead of waiting; a failing shadow is only counted."""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np
import orjson
import pytest
import xgboost as xgb
from prometheus_client.parser import text_string_to_metric_families

from serving.core.shadow import ShadowRunner, max_abs_diff
from serving.modelconfig import load_config
from serving.observability.metrics import Metrics
from serving.protocol.edge import GRPC, REST
from serving.repository.store import ModelVersion, VersionState
from serving.runtimes.base import load_runtime
from serving.settings import Settings
from tests.server_process import DEMO_REPO, ServerProcess
from tests.versions.conftest import AUTH, ROW, Client

LABELS = {"model": "iris-xgb", "primary_version": "1", "shadow_version": "2"}


def sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def test_shadow_differences_are_visible_in_metrics(canary_server: ServerProcess) -> None:
    url = canary_server.url
    policy = {"weights": {"1": 100}, "shadow_version": "2", "shadow_fraction": 1.0}
    before = httpx.get(f"{url}/metrics").text
    response = httpx.put(f"{url}/v2/models/iris-xgb/traffic", headers=AUTH, json=policy)
    assert response.status_code == 200, response.text
    assert response.json()["effective"]["shadow"] == "2"
    expected = xgb.Booster(model_file=str(DEMO_REPO / "iris-xgb/1/model.json")).inplace_predict(
        np.array([ROW], dtype=np.float32)
    )
    shadow_answer = xgb.Booster(model_file=str(DEMO_REPO / "iris-xgb/2/model.json")).inplace_predict(
        np.array([ROW], dtype=np.float32)
    )
    n = 40
    client = Client(canary_server.http_port)
    try:
        for _ in range(n):
            status, version, variant, body = client.infer()
            # the caller always gets the primary's answer, never the shadow's
            assert (status, version, variant) == (200, "1", "stable")
            data = np.array(orjson.loads(body)["outputs"][0]["data"]).reshape(1, 3)
            np.testing.assert_allclose(data, expected, rtol=1e-6)
    finally:
        client.close()
        httpx.delete(f"{url}/v2/models/iris-xgb/traffic", headers=AUTH)
    deadline = time.monotonic() + 20
    while True:
        after = httpx.get(f"{url}/metrics").text
        compared = sample(after, "serving_shadow_comparisons_total", **LABELS) - sample(
            before, "serving_shadow_comparisons_total", **LABELS
        )
        if compared >= n or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    dropped = sample(after, "serving_shadow_dropped_total", model="iris-xgb")
    assert compared + dropped >= n and compared > 0, after
    mismatches = sample(after, "serving_shadow_comparisons_total", result="mismatch", **LABELS) - sample(
        before, "serving_shadow_comparisons_total", result="mismatch", **LABELS
    )
    assert mismatches == compared  # versions 1 and 2 are different boosters
    diff_count = sample(after, "serving_shadow_abs_diff_count", **LABELS) - sample(
        before, "serving_shadow_abs_diff_count", **LABELS
    )
    diff_sum = sample(after, "serving_shadow_abs_diff_sum", **LABELS) - sample(
        before, "serving_shadow_abs_diff_sum", **LABELS
    )
    assert diff_count == compared
    true_diff = float(np.max(np.abs(expected - shadow_answer)))
    assert diff_sum / diff_count == pytest.approx(true_diff, rel=1e-5)
    assert sample(after, "serving_shadow_requests_total", version="2") >= compared
    assert sample(after, "serving_requests_total", variant="shadow", version="2") == 0, "not a request"


def iris_version(version: str) -> ModelVersion:
    config = load_config(DEMO_REPO / "iris-xgb/config.yaml")
    path = DEMO_REPO / "iris-xgb" / version
    entry = ModelVersion("iris-xgb", version, config, path, state=VersionState.READY)
    entry.runtime = load_runtime(config, path, Settings())
    return entry


def test_full_queue_drops_and_counts_and_a_failing_shadow_is_only_counted() -> None:
    metrics = Metrics()
    shadow = iris_version("2")
    primary = iris_version("1")
    assert primary.runtime is not None
    inputs = {"input": np.array([ROW], dtype=np.float32)}
    outputs = primary.runtime.predict(inputs)

    async def scenario() -> tuple[list[bool], float]:
        runner = ShadowRunner(metrics, queue_size=4)
        start = time.perf_counter()
        accepted = [runner.submit(shadow, "1", inputs, outputs, 1e-6, REST) for _ in range(50)]
        took = time.perf_counter() - start
        # 5 features into a 4-feature booster: the shadow raises; the runner counts it and goes on
        bad = {"input": np.ones((1, 5), dtype=np.float32)}
        await runner.drain()
        runner.submit(shadow, "1", bad, outputs, 1e-6, GRPC)
        runner.submit(shadow, "1", inputs, outputs, 1e-6, REST)
        await runner.drain()
        await runner.close()
        return accepted, took

    accepted, took = asyncio.run(scenario())
    assert accepted.count(True) == 4 and accepted.count(False) == 46
    assert took < 0.05, "submitting never waits for the shadow"
    text = metrics.exposition().decode()
    assert sample(text, "serving_shadow_dropped_total", model="iris-xgb") == 46
    assert sample(text, "serving_shadow_comparisons_total", result="mismatch", **LABELS) == 5
    assert sample(text, "serving_shadow_comparisons_total", result="error", **LABELS) == 1
    assert sample(text, "serving_shadow_requests_total", outcome="INTERNAL") == 1
    assert sample(text, "serving_shadow_duration_seconds_count", version="2") == 6
    assert "serving_requests_total{" not in text, "shadow copies are not requests"
    assert shadow.inflight == 0


def test_max_abs_diff() -> None:
    a = {"p": np.array([[0.1, 0.9]], dtype=np.float32)}
    assert max_abs_diff(a, {"p": a["p"].copy()}) == 0.0
    assert max_abs_diff(a, {"p": np.array([[0.2, 0.9]], dtype=np.float32)}) == pytest.approx(0.1)
    assert max_abs_diff(a, {"p": np.array([0.1, 0.9], dtype=np.float32)}) == float("inf")
    assert max_abs_diff(a, {"q": a["p"]}) == float("inf")
    nan = {"p": np.array([np.nan, 1.0])}
    assert max_abs_diff(nan, {"p": np.array([np.nan, 1.0])}) == 0.0
    assert max_abs_diff(nan, {"p": np.array([0.0, 1.0])}) == float("inf")
    words = {"s": np.array([b"a", b"b"], dtype=object)}
    assert max_abs_diff(words, {"s": np.array([b"a", b"b"], dtype=object)}) == 0.0
    assert max_abs_diff(words, {"s": np.array([b"a", b"c"], dtype=object)}) == float("inf")

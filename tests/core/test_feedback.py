"""Ground truth joined to earlier answers: the store alone (bounds, memory), and a real server
(the route, its errors, the per-version series)."""

from __future__ import annotations

import shutil
import tracemalloc
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from serving.core.feedback import FeedbackStore
from serving.errors import Conflict, InvalidInput, ModelNotFound
from serving.observability.metrics import Metrics
from serving.observability.predictions import OutputRule
from tests.observability.test_metrics import total
from tests.server_process import DEMO_REPO, ServerProcess, running_server

CLASSES = OutputRule("probabilities", "class")
SCORE = OutputRule("probability", "score", (0.5,))
TOKEN = "feedback-test-token-0123456789"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def answer(*rows: list[float]) -> dict[str, np.ndarray]:
    return {"probabilities": np.array(rows, dtype=np.float32)}


def test_store_joins_bounds_and_refuses() -> None:
    metrics, clock = Metrics(CollectorRegistry()), Clock()
    store = FeedbackStore(metrics, capacity=3, max_age_s=60, clock=clock)
    store.remember("a", "m", "1", "stable", CLASSES, answer([0.1, 0.8, 0.1]))
    store.remember("b", "m", "2", "canary", CLASSES, answer([0.9, 0.1, 0.0], [0.0, 0.1, 0.9]))
    assert store.submit("m", {"labels": [{"id": "a", "label": 1}, {"id": "b", "label": [2, 2]}]}) == {
        "model": "m",
        "accepted": 2,
    }
    text = metrics.exposition().decode()
    assert total(text, "serving_feedback_labels_total", version="1", result="correct") == 1
    assert total(text, "serving_feedback_labels_total", version="2", variant="canary", result="wrong") == 1
    assert total(text, "serving_feedback_labels_total", version="2", result="correct") == 1
    with pytest.raises(Conflict):
        store.submit("m", {"labels": [{"id": "a", "label": 1}]})
    store.remember("c", "m", "1", "stable", CLASSES, answer([0.1, 0.8, 0.1]))
    with pytest.raises(Conflict):  # the same id twice in one request: nothing stored
        store.submit("m", {"labels": [{"id": "c", "label": 1}, {"id": "c", "label": 1}]})
    bad: object  # documents of every shape: the store takes any JSON
    for bad in (
        {"labels": [{"id": "c", "label": "one"}]},
        {"labels": [{"id": "c", "label": [1, 1]}]},
        [],
        {},
    ):
        with pytest.raises(InvalidInput):
            store.submit("m", bad)
    with pytest.raises(ModelNotFound, match="1 of 2 ids unknown"):
        store.submit("m", {"labels": [{"id": "c", "label": 1}, {"id": "zz", "label": 1}]})
    # all or none: "c" was in every refused request and is still unlabelled
    assert store.submit("m", {"labels": [{"id": "c", "label": 0}]})["accepted"] == 1
    # capacity: the oldest goes, counted; age: answers past max_age_s go too
    for i in range(4):
        store.remember(f"x{i}", "m", "1", "stable", CLASSES, answer([1.0, 0.0, 0.0]))
    assert len(store) == 3
    with pytest.raises(ModelNotFound):
        store.submit("m", {"labels": [{"id": "x0", "label": 0}]})
    clock.now = 61
    with pytest.raises(ModelNotFound):
        store.submit("m", {"labels": [{"id": "x3", "label": 0}]})
    text = metrics.exposition().decode()
    assert total(text, "serving_feedback_evicted_total", reason="capacity") >= 3
    assert total(text, "serving_feedback_evicted_total", reason="age") == 3
    assert total(text, "serving_feedback_rejected_total", reason="duplicate") == 3  # 1 + 2 labels
    assert total(text, "serving_feedback_rejected_total", reason="unknown_id") == 4


def test_scores_get_absolute_errors() -> None:
    metrics = Metrics(CollectorRegistry())
    store = FeedbackStore(metrics, capacity=10, max_age_s=60)
    store.remember("s", "m", "1", "stable", SCORE, {"probability": np.array([0.9], dtype=np.float32)})
    with pytest.raises(InvalidInput, match="finite numbers"):
        store.submit("m", {"labels": [{"id": "s", "label": True}]})
    store.submit("m", {"labels": [{"id": "s", "label": 0.6}]})  # |0.9 - 0.6| = 0.3
    text = metrics.exposition().decode()
    assert total(text, "serving_feedback_labels_total", result="scored") == 1
    assert total(text, "serving_feedback_abs_error_bucket", le="1.0") == 1
    assert total(text, "serving_feedback_abs_error_bucket", le="0.1") == 0


def test_memory_per_remembered_answer() -> None:
    """The documented bound: about 400 bytes per one-row answer (the retention caps the count)."""
    store = FeedbackStore(Metrics(CollectorRegistry()), capacity=20_000, max_age_s=3600)
    ids = [f"{i:032x}" for i in range(20_000)]
    row = answer([0.1, 0.8, 0.1])
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for request_id in ids:
        store.remember(request_id, "m", "1", "stable", CLASSES, row)
    per_answer = (tracemalloc.get_traced_memory()[0] - before) / len(ids)
    tracemalloc.stop()
    assert len(store) == 20_000 and per_answer < 600, per_answer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("repo")
    shutil.copytree(DEMO_REPO / "iris-xgb", repo / "iris-xgb")
    env = {"SERVING_ADMIN_TOKEN": TOKEN, "SERVING_FEEDBACK_RETENTION": "3"}
    with running_server(repo, tmp_path_factory.mktemp("logs"), grpc=False, env=env) as proc:
        yield proc


def test_feedback_route_on_a_real_server(server: ServerProcess) -> None:
    setosa = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]
    }
    admin = {"Authorization": f"Bearer {TOKEN}"}
    url = f"{server.url}/v2/models/iris-xgb"
    with httpx.Client(timeout=10) as client:
        named = client.post(f"{url}/infer", json={**setosa, "id": "req-1"}).json()
        assert named["id"] == "req-1"
        unnamed = client.post(f"{url}/infer", json=setosa).json()
        assert len(unnamed["id"]) == 32  # the server's id, to label it later
        body = {"labels": [{"id": "req-1", "label": 0}, {"id": unnamed["id"], "label": 2}]}
        assert client.post(f"{url}/feedback", json=body).status_code == 401  # admin only
        ok = client.post(f"{url}/feedback", json=body, headers=admin)
        assert ok.status_code == 200 and ok.json() == {"model": "iris-xgb", "accepted": 2}
        again = client.post(f"{url}/feedback", json=body, headers=admin)
        assert again.status_code == 409 and "already has its label" in again.json()["error"]
        unknown = client.post(f"{url}/feedback", json={"labels": [{"id": "nope", "label": 0}]}, headers=admin)
        assert unknown.status_code == 404 and "unknown" in unknown.json()["error"]
        bad = client.post(f"{url}/feedback", content=b"{not json", headers=admin)
        assert bad.status_code == 400 and "error" in bad.json()
        missing = client.post(f"{server.url}/v2/models/nope/feedback", json=body, headers=admin)
        assert missing.status_code == 404
        for _ in range(4):  # past the retention of 3: req-1's successors push the oldest out
            client.post(f"{url}/infer", json=setosa)
        text = client.get(f"{server.url}/metrics").text
    labels = {"model": "iris-xgb", "version": "2", "variant": "stable"}
    assert total(text, "serving_feedback_labels_total", **labels, result="correct") == 1
    assert total(text, "serving_feedback_labels_total", **labels, result="wrong") == 1
    assert total(text, "serving_feedback_rejected_total", model="iris-xgb", reason="duplicate") == 2
    assert total(text, "serving_feedback_rejected_total", model="iris-xgb", reason="unknown_id") == 1
    assert total(text, "serving_feedback_evicted_total", model="iris-xgb", reason="capacity") >= 1

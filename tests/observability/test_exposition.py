"""The fast ``/metrics`` exposition (serving/observability/exposition.py): byte for byte
``generate_latest`` on a real ``Metrics`` as it changes, its start-up check and fallbacks,
and a real server scraped with both ``SERVING_METRICS_EXPOSITION`` values."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from serving.observability import exposition
from serving.observability.exposition import FAST, LIBRARY, FastExposition
from serving.observability.metrics import Metrics
from serving.observability.predictions import OutputRule
from tests.server_process import DEMO_REPO, ServerProcess, running_server

ODD = ['quo"te', "back\\slash", "new\nline", 'all "\\\n of them é']


def busy_metrics(models: int = 30) -> Metrics:
    """A Metrics after requests, stages, predictions, model states and more for many versions,
    some of them under label values that need escaping."""
    metrics = Metrics(CollectorRegistry())
    assert metrics.multiprocess_dir is None
    names = [f"model-{i}" for i in range(models)] + ODD
    for i, model in enumerate(names):
        for version in ("1", "2") if i % 2 else ("1",):
            record(metrics, model, version, i)
    metrics.shadow_dropped.labels("model-0").inc()
    metrics.event_loop_lag.observe(0.0007)
    metrics.model_cache_hits.inc(3)
    metrics.repository_store_up.set(1)
    metrics.feature_drift.labels("model-1", "1", "f0").set(float("nan"))
    return metrics


def record(metrics: Metrics, model: str, version: str, i: int) -> None:
    metrics.set_model_state(model, version, "READY")
    metrics.model_load_duration.labels(model, version).set(0.01 * (i + 1))
    metrics.set_monitoring(model, version, "none")
    metrics.set_predict_paths(model, version, {"small": "onnx-twin", "large": "direct"})
    metrics.observe_request(model, version, "stable", "rest", "2xx", 0.0001 * (i + 1))
    metrics.observe_request(model, version, "canary", "grpc", "INVALID_ARGUMENT", 0.3)
    metrics.inflight_for(model).inc()
    metrics.stage(model, version).served(0.00002, i + 1, 0.00004 * (i + 1))
    rules = [OutputRule("output", "class")]
    metrics.prediction_recorder(model, version, "stable", object(), lambda: rules)
    metrics.predictions.labels(model, version, "stable", "output", str(i % 3)).inc(i + 1)


def assert_identical(metrics: Metrics, fast: FastExposition) -> str:
    library = generate_latest(metrics.registry)
    ours = fast()
    assert ours == library, first_difference(ours, library)
    return ours.decode()


def first_difference(ours: bytes, library: bytes) -> str:
    for n, (a, b) in enumerate(zip(ours.splitlines(), library.splitlines(), strict=False)):
        if a != b:
            return f"line {n}: fast {a!r} != library {b!r}"
    return f"lengths {len(ours)} != {len(library)}"


def test_fast_exposition_is_generate_latest_byte_for_byte_as_metrics_change() -> None:
    metrics = busy_metrics()
    fast = FastExposition(metrics.registry)
    text = assert_identical(metrics, fast)
    assert 'model="quo\\"te"' in text and 'model="back\\\\slash"' in text and 'model="new\\nline"' in text
    assert "serving_requests_created{" in text and 'le="+Inf"' in text
    assert_identical(metrics, fast)  # nothing moved: every line from the cache

    # Children added between two scrapes, values moved, a child removed, one removed and
    # added again under the same labels (a new child, with its values from zero).
    for i, model in enumerate(["late-1", "late-2", *ODD]):
        record(metrics, model, "3", i)
    metrics.observe_request("model-3", "2", "stable", "rest", "2xx", 7.0)
    metrics.model_state.remove("model-0", "1", "FAILED")
    metrics.queue_wait.remove(ODD[1], "1")
    metrics.stage(ODD[1], "1").queue_wait.observe(0.5)  # the removed child still records, unseen
    metrics.requests.remove("model-5", "1", "stable", "rest", "2xx")
    metrics.requests.labels("model-5", "1", "stable", "rest", "2xx").inc(0.5)
    text = assert_identical(metrics, fast)
    assert (
        'serving_requests_total{model="model-5",outcome="2xx",protocol="rest",variant="stable",version="1"} 0.5'
        in (text)
    )
    assert 'model="model-0",state="FAILED"' not in text

    # Values equal but printed apart (0.0 and -0.0), integers set on gauges, a counter reset
    # (its _created moves), a clear(), NaN and infinities.
    gauge = metrics.model_load_duration.labels("model-2", "1")
    gauge.set(0.0)
    assert_identical(metrics, fast)
    gauge.set(-0.0)
    assert "-0.0" in assert_identical(metrics, fast)
    gauge.set(3)
    metrics.model_cache_bytes.set(float("inf"))
    metrics.repository_store_up.set(float("-inf"))
    metrics.model_cache_hits.reset()
    metrics.feedback_rejected.labels("model-1", "unknown_id").inc()
    metrics.feedback_rejected.clear()
    metrics.shadow_abs_diff.labels("model-1", "1", "2").observe(float("nan"))
    assert_identical(metrics, fast)
    assert_identical(metrics, fast)


class Custom:
    """A collector prometheus-client does not define: rendered by the library, in its place."""

    def __init__(self) -> None:
        self.value = 1.0

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily("custom_things", 'Things "custom"', labels=["kind"])
        family.add_metric(["a\nb"], self.value)
        return [family]


class SubCounter(Counter):
    """A subclass may sample differently: rendered by the library."""


def test_collectors_it_does_not_know_come_out_through_the_library_in_their_place() -> None:
    registry = CollectorRegistry(target_info={"pod": "p-1"})
    first = Counter("first", "First.", ["a"], registry=registry)
    first.labels("x").inc()
    custom = Custom()
    registry.register(custom)
    SubCounter("sub", "Subclass.", registry=registry).inc(2)
    callback = Gauge("callback", "From a function.", ["k"], registry=registry)
    callback.labels("v").set_function(lambda: custom.value * 10)
    Histogram("plain_seconds", "Unlabelled.", registry=registry).observe(0.3)
    metrics = Metrics(registry)
    fast = FastExposition(registry)
    text = assert_identical(metrics, fast)
    order = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert order[:6] == [
        "target_info",
        "first_total",
        "first_created",
        "custom_things_total",
        "sub_total",
        "sub_created",
    ]
    assert 'callback{k="v"} 10.0' in text
    custom.value = 4.0
    assert 'callback{k="v"} 40.0' in assert_identical(metrics, fast)
    registry.unregister(custom)
    registry.unregister(first)
    assert "custom_things" not in assert_identical(metrics, fast)
    assert len(fast._families) == len(list(registry._collector_to_names))


def test_scrapes_while_threads_record_stay_whole_and_end_identical() -> None:
    metrics = busy_metrics(models=5)
    fast = FastExposition(metrics.registry)
    stop = threading.Event()

    def hammer(worker: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            metrics.observe_request(f"t{worker}-{n % 50}", "1", "stable", "rest", "2xx", 0.001)
            metrics.stage("model-1", "1").served(0.0, 1, 0.0001)

    threads = [threading.Thread(target=hammer, args=(w,)) for w in range(2)]
    for thread in threads:
        thread.start()
    try:
        counts: list[float] = []
        deadline = time.monotonic() + 30
        while len(counts) < 20 or counts[-1] == counts[0]:  # until the threads were seen moving
            assert time.monotonic() < deadline, counts
            families = {f.name: f for f in text_string_to_metric_families(fast().decode())}
            batches = [
                s.value
                for s in families["serving_batch_size"].samples
                if s.name == "serving_batch_size_count"
            ]
            counts.append(sum(batches))
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert counts == sorted(counts) and counts[-1] > counts[0], counts
    assert_identical(metrics, fast)


class NoRawValue:
    """A value with the public reads and writes but not ``_value``: what a prometheus-client
    that reshaped its private value class would give."""

    def __init__(self, value: Any) -> None:
        self.wrapped = value

    def get(self) -> float:
        return float(self.wrapped.get())

    def get_exemplar(self) -> None:
        return None

    def inc(self, amount: float) -> None:
        self.wrapped.inc(amount)


@pytest.fixture
def fresh_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget this process's start-up verdict, so the test's check runs again."""
    monkeypatch.setattr(exposition.fast_path_problem, "_verdicts", [])


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == exposition.log.name and r.levelno == logging.WARNING
    ]


@pytest.mark.usefixtures("fresh_check")
def test_start_up_check_passes_on_the_installed_library(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    assert exposition.fast_path_problem() is None
    assert Metrics(CollectorRegistry())._render.mode == FAST  # type: ignore[union-attr]
    assert Metrics(CollectorRegistry(), exposition=LIBRARY)._render.mode == LIBRARY  # type: ignore[union-attr]
    assert warnings_of(caplog) == []


@pytest.mark.usefixtures("fresh_check")
def test_a_reshaped_private_attribute_fails_the_check_once_and_the_library_serves(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    probe = exposition._probe_registry

    def reshaped() -> tuple[CollectorRegistry, Any]:
        registry, change = probe()
        counter = registry._names_to_collectors["probe_requests_total"]
        child = counter.labels("m", "1")  # type: ignore[attr-defined]
        child._value = NoRawValue(child._value)
        return registry, change

    monkeypatch.setattr(exposition, "_probe_registry", reshaped)
    caplog.set_level(logging.WARNING)
    metrics = busy_metrics(models=3)
    other = Metrics(CollectorRegistry())
    assert metrics._render.mode == LIBRARY and other._render.mode == LIBRARY  # type: ignore[union-attr]
    assert metrics.exposition() == generate_latest(metrics.registry)
    (warning,) = warnings_of(caplog)  # one warning however many Metrics
    assert "fast path is off" in warning and "AttributeError" in warning


@pytest.mark.usefixtures("fresh_check")
def test_output_unlike_the_librarys_fails_the_check(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A version whose floats print differently (here: Python's repr, 'inf' for '+Inf')."""
    monkeypatch.setattr(exposition, "_fmt", repr)
    caplog.set_level(logging.WARNING)
    assert "differs from generate_latest" in (exposition.fast_path_problem() or "")
    assert Metrics(CollectorRegistry())._render.mode == LIBRARY  # type: ignore[union-attr]
    assert len(warnings_of(caplog)) == 1


def test_a_scrape_the_fast_path_fails_on_is_answered_by_the_library(caplog: pytest.LogCaptureFixture) -> None:
    metrics = busy_metrics(models=3)
    render = metrics._render
    assert render is not None and render.mode == FAST
    metrics.exposition()
    child = metrics.requests.labels("model-1", "1", "stable", "rest", "2xx")
    child._value = NoRawValue(child._value)
    caplog.set_level(logging.WARNING)
    assert metrics.exposition() == generate_latest(metrics.registry)
    assert render.mode == LIBRARY
    assert any("fast path failed" in message for message in warnings_of(caplog))


@pytest.fixture(scope="module", params=[FAST, LIBRARY])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("repo")
    shutil.copytree(DEMO_REPO / "iris-xgb", repo / "iris-xgb")
    env = {"SERVING_METRICS_EXPOSITION": request.param}
    with running_server(repo, tmp_path_factory.mktemp("logs"), grpc=False, env=env) as proc:
        yield proc


def test_real_server_scrape_parses_and_counts_the_requests_sent(server: ServerProcess) -> None:
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}
    with httpx.Client(base_url=server.url) as client:
        for _ in range(7):
            assert client.post("/v2/models/iris-xgb/versions/2/infer", json=body).status_code == 200
        for _ in range(3):
            assert client.post("/v2/models/iris-xgb/versions/2/infer", json={"inputs": 1}).status_code == 400
        scrape = client.get("/metrics")
    assert scrape.status_code == 200 and scrape.headers["content-type"].startswith(
        "text/plain; version=0.0.4"
    )
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(scrape.text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "serving_requests_total" and labels["model"] == "iris-xgb":
                key = (labels["version"], labels["outcome"])
                counts[key] = counts.get(key, 0.0) + sample.value
    # The refused bodies are counted before routing (no version yet).
    assert counts == {("2", "2xx"): 7.0, ("none", "4xx"): 3.0}
    assert "fast path" not in server.log()

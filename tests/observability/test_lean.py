"""The lean recorders (serving.observability.lean) against prometheus-client's own calls: the
same bytes from a real ``Metrics`` fed the same requests, the start-up check and its
fallback, and no update lost when predict threads record stage series at once."""

from __future__ import annotations

import logging
import random
import threading

import numpy as np
import pytest
from prometheus_client import Counter, Gauge, Histogram

from serving.observability import lean
from serving.observability.exposition import LIBRARY
from serving.observability.lean import LeanCounter, LeanGauge, LeanHistogram
from serving.observability.metrics import Metrics
from serving.observability.predictions import OutputRule


def _without_created(text: bytes) -> str:
    # _created samples are the time each child was made: the two registries' differ
    return "\n".join(line for line in text.decode().splitlines() if "_created" not in line)


def _feed(metrics: Metrics, seed: int) -> None:
    """The calls the hot path makes, with random values, models and outcomes."""
    rng = random.Random(seed)
    rules = [OutputRule("label", "class", classes=3), OutputRule("score", "score", edges=(0.25, 0.5, 0.75))]
    for _ in range(3000):
        model = rng.choice(["iris", "wine"])
        version = rng.choice(["1", "2"])
        seconds = rng.choice([rng.expovariate(2000.0), 0.0, 0.0001, 12.0])
        inflight = metrics.inflight_for(model)
        inflight.inc()
        stage = metrics.stage(model, version)
        if rng.random() < 0.5:
            stage.served(seconds / 3, rng.randint(1, 300), seconds / 2)
        else:
            stage.waited(seconds / 4)
            stage.executed(rng.randint(1, 2000), seconds / 5, rng.randint(1, 8))
        outcome = rng.choice(["2xx", "2xx", "4xx", "5xx"])
        metrics.observe_request(model, version, "stable", "rest", outcome, seconds)
        inflight.dec()
        if rng.random() < 0.3:
            inflight.inc()  # some requests still in flight
        recorder = metrics.prediction_recorder(model, version, "stable", rules, lambda: rules)
        rows = rng.choice([1, 1, 5])
        recorder.record(
            {
                "label": np.array([rng.randint(0, 70) for _ in range(rows)]),
                "score": np.array([rng.random() for _ in range(rows)]),
            }
        )


def test_lean_recording_gives_the_librarys_bytes() -> None:
    fast, library = Metrics(), Metrics(exposition=LIBRARY)
    assert fast.lean and not library.lean
    _feed(fast, 7)
    _feed(library, 7)
    assert fast.exposition().count(b"serving_request_duration_seconds_bucket") > 50
    assert fast.exposition().count(b"serving_predictions_total{") > 20
    assert _without_created(fast.exposition()) == _without_created(library.exposition())
    # the hot path holds lean recorders; the library's run keeps the library's children
    assert isinstance(fast.inflight_for("iris"), LeanGauge)
    assert isinstance(fast.stage("iris", "1").compute, LeanHistogram)
    assert not isinstance(library.inflight_for("iris"), LeanGauge)
    assert not isinstance(library.stage("iris", "1").compute, LeanHistogram)


def test_get_sample_value_sees_each_lean_write_at_once() -> None:
    metrics = Metrics()
    labels = {"model": "iris", "version": "1", "variant": "stable", "protocol": "rest"}
    metrics.observe_request("iris", "1", "stable", "rest", "2xx", 0.0003)
    metrics.observe_request("iris", "1", "stable", "rest", "2xx", 0.002)
    sample = metrics.registry.get_sample_value
    assert sample("serving_requests_total", {**labels, "outcome": "2xx"}) == 2
    assert sample("serving_request_duration_seconds_bucket", {**labels, "le": "0.0005"}) == 1
    assert sample("serving_request_duration_seconds_bucket", {**labels, "le": "0.0025"}) == 2
    assert sample("serving_request_duration_seconds_sum", labels) == pytest.approx(0.0023)


def test_a_failed_check_records_through_the_library_after_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(lean.lean_problem, "_verdicts", [])
    monkeypatch.setattr(lean, "_probe", lambda lean: b"lean" if lean else b"library")
    with caplog.at_level(logging.WARNING, logger="serving.observability.lean"):
        metrics = Metrics()
        Metrics()
    warnings = [r.getMessage() for r in caplog.records if r.name == "serving.observability.lean"]
    assert warnings == [
        "metrics: recording through prometheus-client's own calls (slower): "
        "its output differs from the library's on the probe registry"
    ]
    assert not metrics.lean
    metrics.observe_request("iris", "1", "stable", "rest", "2xx", 0.001)
    child = metrics.inflight_for("iris")
    assert not isinstance(child, LeanCounter)
    child.inc()
    assert metrics.registry.get_sample_value("serving_inflight_requests", {"model": "iris"}) == 1
    labels = {"model": "iris", "version": "1", "variant": "stable", "protocol": "rest", "outcome": "2xx"}
    assert metrics.registry.get_sample_value("serving_requests_total", labels) == 1


def test_a_missing_attribute_fails_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lean.lean_problem, "_verdicts", [])
    monkeypatch.delattr(LeanHistogram, "observe")
    assert "AttributeError" in (lean.lean_problem() or "")


def test_the_probe_sees_a_recorder_that_drifts_from_the_library(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check compares bytes: a recorder that puts a value on a bound into the next bucket
    (bisect_right instead of the library's ``<=``) fails it."""
    from bisect import bisect_right

    def off_by_one(self: LeanHistogram, amount: float) -> None:
        self._sum._value += amount
        self._buckets[min(bisect_right(self._bounds, amount), len(self._bounds) - 1)]._value += 1.0

    monkeypatch.setattr(lean.lean_problem, "_verdicts", [])
    assert lean.lean_problem() is None
    monkeypatch.setattr(lean.lean_problem, "_verdicts", [])
    monkeypatch.setattr(LeanHistogram, "observe", off_by_one)
    assert lean.lean_problem() == "its output differs from the library's on the probe registry"


def test_stage_series_lose_no_update_when_threads_record_at_once() -> None:
    """Predict threads and the loop write the same stage children: every update counts.
    Versions summed under one model-level child share the stage's lock. (CPython 3.11 does
    not switch threads inside a recorder's ``+=``, so this run passes without the lock too,
    checked; the lock is for interpreters that do, as free-threaded builds.)"""
    metrics = Metrics(stage_versions=False)
    assert metrics.lean
    stages = [metrics.stage("iris", "1"), metrics.stage("iris", "2")]
    assert stages[0].lock is stages[1].lock
    threads, calls = 4, 20_000
    start = threading.Barrier(threads)

    def record(stage_index: int) -> None:
        stage = stages[stage_index % 2]
        start.wait()
        for _ in range(calls):
            stage.executed(1, 0.001)

    workers = [threading.Thread(target=record, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    labels = {"model": "iris", "version": "all"}
    sample = metrics.registry.get_sample_value
    assert sample("serving_batch_size_count", labels) == threads * calls
    assert sample("serving_compute_duration_seconds_count", labels) == threads * calls
    assert sample("serving_batch_size_sum", labels) == threads * calls


def test_wrap_hands_out_the_recorder_of_each_kind() -> None:
    from prometheus_client import CollectorRegistry

    r = CollectorRegistry()
    counter, gauge = Counter("c", "c", registry=r), Gauge("g", "g", registry=r)
    histogram = Histogram("h", "h", registry=r)
    assert type(lean.wrap(counter, counter, True)) is LeanCounter
    assert type(lean.wrap(gauge, gauge, True)) is LeanGauge
    assert type(lean.wrap(histogram, histogram, True)) is LeanHistogram
    assert lean.wrap(histogram, histogram, False) is histogram

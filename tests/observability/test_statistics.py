"""Triton-shaped statistics (serving/observability/statistics.py) fed by the same calls as the
Prometheus collectors: the edge's observe_request and the predictor stages."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from serving.labels import NO_VERSION, UNKNOWN_MODEL
from serving.observability.metrics import OK_OUTCOMES, Metrics
from serving.predict.batching import DynamicBatcher
from serving.predict.predictor import ThreadedPredictor
from serving.protocol.edge import GRPC, REST
from tests.predict.models import N_FEATURES, load, write_xgb_model


def test_success_outcomes_are_the_edges_ok_labels() -> None:
    assert {REST.ok, GRPC.ok} == OK_OUTCOMES


def test_requests_count_as_success_or_fail_with_their_durations() -> None:
    metrics = Metrics()
    metrics.observe_request("m", "1", "stable", "rest", "2xx", 0.002)
    metrics.observe_request("m", "1", "stable", "grpc", "OK", 0.001)
    metrics.observe_request("m", "1", "canary", "rest", "4xx", 0.0005)
    metrics.observe_request("m", NO_VERSION, "stable", "grpc", "NOT_FOUND", 0.0001)
    metrics.observe_request(UNKNOWN_MODEL, NO_VERSION, "stable", "rest", "4xx", 0.0001)
    stats = metrics.statistics.snapshot("m", "1")
    assert stats["inference_stats"]["success"] == {"count": 2, "ns": 3_000_000}
    assert stats["inference_stats"]["fail"] == {"count": 1, "ns": 500_000}
    assert stats["last_inference"] > 1_700_000_000_000  # ms since the epoch
    # requests that never reached a version have no version statistics
    assert metrics.statistics.snapshot("m", NO_VERSION)["inference_stats"]["fail"]["count"] == 0
    assert metrics.statistics.snapshot(UNKNOWN_MODEL, NO_VERSION)["inference_stats"]["fail"]["count"] == 0
    # and the Prometheus counter saw the same requests
    ok = metrics.registry.get_sample_value(
        "serving_requests_total",
        {"model": "m", "version": "1", "variant": "stable", "protocol": "rest", "outcome": "2xx"},
    )
    assert ok == 1.0


def test_unread_versions_read_as_zeros() -> None:
    stats = Metrics().statistics.snapshot("m", "7")
    assert (stats["name"], stats["version"], stats["inference_count"], stats["batch_stats"]) == (
        "m",
        "7",
        0,
        [],
    )
    assert all(d == {"count": 0, "ns": 0} for d in stats["inference_stats"].values())


def test_unbatched_predictor_counts_each_call_inline_and_on_the_pool(tmp_path: Path) -> None:
    runtime, _ = load(write_xgb_model(tmp_path))
    metrics = Metrics()
    x = np.zeros((3, N_FEATURES), dtype=np.float32)

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            for budget in (0.0, 1e9):  # the pool, then inline
                predictor = ThreadedPredictor(
                    runtime, pool, metrics=metrics, model="m", version="1", inline_budget_us=budget
                )
                for _ in range(3):
                    await predictor.predict({"input": x}, None)

    asyncio.run(main())
    stats = metrics.statistics.snapshot("m", "1")
    assert stats["execution_count"] == 6 and stats["inference_count"] == 18
    for stage in ("queue", "compute_infer", "compute_input", "compute_output"):
        assert stats["inference_stats"][stage]["count"] == 6, stage
    assert stats["inference_stats"]["compute_infer"]["ns"] > 0
    (three,) = stats["batch_stats"]
    assert three["batch_size"] == 3 and three["compute_infer"]["count"] == 6
    compute = metrics.registry.get_sample_value(
        "serving_compute_duration_seconds_count", {"model": "m", "version": "1"}
    )
    assert compute == stats["execution_count"]


def test_a_dynamic_batch_is_one_execution_charged_to_each_request(tmp_path: Path) -> None:
    runtime, _ = load(write_xgb_model(tmp_path))
    metrics = Metrics()
    rows = [1, 2, 3, 2]

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = DynamicBatcher(
                runtime,
                pool,
                max_batch_size=64,
                max_queue_delay_us=200_000,
                metrics=metrics,
                model="m",
                version="1",
            )
            try:
                await asyncio.gather(
                    *(
                        batcher.predict({"input": np.zeros((r, N_FEATURES), dtype=np.float32)}, None)
                        for r in rows
                    )
                )
            finally:
                await batcher.close()

    asyncio.run(main())
    stats = metrics.statistics.snapshot("m", "1")
    assert stats["execution_count"] == 1 and stats["inference_count"] == 8
    assert stats["inference_stats"]["queue"]["count"] == 4
    assert stats["inference_stats"]["compute_infer"]["count"] == 4
    (batch,) = stats["batch_stats"]
    assert batch["batch_size"] == 8 and batch["compute_infer"]["count"] == 1
    # each request is charged the batch's time (to the ns: both are rounded sums of seconds)
    assert abs(stats["inference_stats"]["compute_infer"]["ns"] - 4 * batch["compute_infer"]["ns"]) <= 4

"""Where ThreadedPredictor runs a call: inline on the event loop only for row counts it has
measured to be cheaper than ``inline_budget_us``; first calls, slow models and models that
slow down go to the pool. A real ONNX runtime, a real pool; the wrapper only records the
thread each call ran on and can add a delay."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from serving.metrics import Metrics
from serving.modelconfig import load_config
from serving.predictor import ThreadedPredictor
from serving.runtimes.base import Runtime, load_runtime
from serving.settings import Settings
from serving.types import Array
from tests.tinymodels import write_identity_model


class Recording:
    """A real runtime that notes which thread ran each call and can be made slow."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.threads: list[str] = []
        self.delay = 0.0

    def predict(self, inputs: dict[str, Array]) -> dict[str, Array]:
        self.threads.append(threading.current_thread().name)
        if self.delay:
            time.sleep(self.delay)
        return self.runtime.predict(inputs)

    def close(self) -> None:
        self.runtime.close()


@pytest.fixture
def runtime(tmp_path: Path) -> Recording:
    model_dir = write_identity_model(tmp_path, "ident", "FP32", width=3)
    real = load_runtime(
        load_config(model_dir / "config.yaml"), model_dir / "1", Settings(model_repo=tmp_path)
    )
    return Recording(real)


def _run(runtime: Recording, budget_us: float, calls: list[int], metrics: Metrics | None = None) -> list[str]:
    """Runs one call per entry (its row count) in order; returns the thread of each call."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pool")
    predictor = ThreadedPredictor(
        runtime, executor, inline_budget_us=budget_us, metrics=metrics, model="ident", version="1"
    )

    async def scenario() -> None:
        for rows in calls:
            x = np.arange(rows * 3, dtype=np.float32).reshape(rows, 3)
            out = await predictor.predict({"x": x}, None)
            np.testing.assert_array_equal(out["y"], x)

    try:
        asyncio.run(scenario())
    finally:
        executor.shutdown()
    return ["loop" if name == "MainThread" else "pool" for name in runtime.threads]


def test_cheap_calls_run_inline_after_the_first_of_each_row_count(runtime: Recording) -> None:
    where = _run(runtime, 5_000, [1, 1, 1, 4, 4, 1, 300, 300])
    # 1 row: measured on the pool, then inline; 4 rows and 300 rows are new buckets.
    assert where == ["pool", "loop", "loop", "pool", "loop", "loop", "pool", "loop"]


def test_budget_zero_always_uses_the_pool(runtime: Recording) -> None:
    assert _run(runtime, 0, [1, 1, 1, 1]) == ["pool"] * 4


def test_a_model_slower_than_the_budget_stays_on_the_pool(runtime: Recording) -> None:
    # 2 ms per call against a 100 µs budget, spent sleeping: the pool thread's CPU time says
    # cheap, so it is tried inline once; the wall clock there sends it back for good.
    runtime.delay = 0.002
    assert _run(runtime, 100, [1] * 20) == ["pool", "loop"] + ["pool"] * 18


def test_a_model_that_slows_down_leaves_the_loop(runtime: Recording) -> None:
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pool")
    predictor = ThreadedPredictor(runtime, executor, inline_budget_us=1_000)
    x = {"x": np.ones((1, 3), dtype=np.float32)}

    async def scenario() -> None:
        for _ in range(3):
            await predictor.predict(x, None)
        assert predictor.inline_buckets() == [1]
        runtime.delay = 0.01  # 10 ms a call; samples are capped at 4 budgets (4 ms)
        await predictor.predict(x, None)  # one slow call is taken for a spike: still inline
        assert predictor.inline_buckets() == [1]
        await predictor.predict(x, None)
        await predictor.predict(x, None)  # the third slow call lifts the average past 1 ms
        assert predictor.inline_buckets() == []
        await predictor.predict(x, None)  # now on the pool

    try:
        asyncio.run(scenario())
    finally:
        executor.shutdown()
    where = ["loop" if name == "MainThread" else "pool" for name in runtime.threads]
    assert where == ["pool", "loop", "loop", "loop", "loop", "loop", "pool"]


def test_a_model_slow_for_a_while_comes_back_inline(runtime: Recording) -> None:
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pool")
    predictor = ThreadedPredictor(runtime, executor, inline_budget_us=1_000)
    x = {"x": np.ones((1, 3), dtype=np.float32)}

    async def scenario() -> None:
        for _ in range(3):
            await predictor.predict(x, None)
        runtime.delay = 0.01
        for _ in range(3):  # three slow calls: off the loop
            await predictor.predict(x, None)
        assert predictor.inline_buckets() == []
        runtime.delay = 0.0
        for _ in range(150):  # fast again, on the pool: the average drifts back under 1 ms
            await predictor.predict(x, None)
        assert predictor.inline_buckets() == [1]

    try:
        asyncio.run(scenario())
    finally:
        executor.shutdown()
    where = ["loop" if name == "MainThread" else "pool" for name in runtime.threads]
    assert where[6] == "pool" and where[-1] == "loop"
    assert 20 < where[6:].index("loop") < 100  # tens of pool calls, not one, not forever


def test_inline_calls_record_stage_metrics(runtime: Recording) -> None:
    metrics = Metrics()
    assert _run(runtime, 5_000, [2, 2, 2], metrics) == ["pool", "loop", "loop"]
    labels = {"model": "ident", "version": "1"}
    assert metrics.registry.get_sample_value("serving_compute_duration_seconds_count", labels) == 3
    assert metrics.registry.get_sample_value("serving_batch_size_sum", labels) == 6
    assert metrics.registry.get_sample_value("serving_queue_depth", labels) == 0

"""Where ThreadedPredictor runs a call: inline on the event loop only for row counts it has
measured to be cheaper than ``inline_budget_us``; first calls, slow models and models that
slow down go to the pool. A real ONNX runtime, a real pool; the wrapper only records the
thread each call ran on and can add a delay."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serving.inference import Array
from serving.modelconfig import load_config
from serving.observability.metrics import Metrics
from serving.predict.predictor import ThreadedPredictor
from serving.runtimes.base import Runtime, load_runtime
from serving.settings import Settings
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
            time.sleep(self.delay)  # deliberate: a slow runtime
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


def _warm_pool(runtime: Recording) -> ThreadPoolExecutor:
    """A one-thread pool whose thread has run the model once: the very first call on a new
    thread costs onnxruntime ~1 ms of set-up, which would make the pool's first guess (and
    so these tests' sequences) depend on the machine."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pool")
    for rows in (1, 2, 4, 300):
        executor.submit(runtime.runtime.predict, {"x": np.ones((rows, 3), dtype=np.float32)}).result()
    return executor


def _run(runtime: Recording, budget_us: float, calls: list[int], metrics: Metrics | None = None) -> list[str]:
    """Runs one call per entry (its row count) in order; returns the thread of each call."""
    executor = _warm_pool(runtime)
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
    # 2 ms per call against a 100 µs budget, spent sleeping: the pool thread's CPU time may
    # say cheap (once a cold first call's cost has decayed), and then it is tried inline
    # once; the wall clock there sends it back, and one probe in 20 calls is all it gets.
    runtime.delay = 0.002
    where = _run(runtime, 100, [1] * 20)
    assert where[0] == "pool" and where.count("loop") <= 1


Steps = Callable[[ThreadedPredictor, dict[str, Array]], Coroutine[Any, Any, None]]


def _drive(runtime: Recording, budget_us: float, steps: Steps) -> list[str]:
    """Runs ``steps`` against a fresh predictor on one-row inputs; where each call ran."""
    executor = _warm_pool(runtime)
    predictor = ThreadedPredictor(runtime, executor, inline_budget_us=budget_us)
    try:
        asyncio.run(steps(predictor, {"x": np.ones((1, 3), dtype=np.float32)}))
    finally:
        executor.shutdown()
    return ["loop" if name == "MainThread" else "pool" for name in runtime.threads]


def test_a_model_that_slows_down_leaves_the_loop(runtime: Recording) -> None:
    async def steps(predictor: ThreadedPredictor, x: dict[str, Array]) -> None:
        for _ in range(3):
            await predictor.predict(x, None)
        runtime.delay = 0.01  # 10 ms a call, against a 1 ms budget
        for _ in range(5):
            await predictor.predict(x, None)

    where = _drive(runtime, 1_000, steps)
    assert where[:3] == ["pool", "loop", "loop"]
    # Samples are capped at 4 budgets, so from an average under the budget it takes one to
    # three slow calls (one when the machine also preempted the fast ones) to leave the loop;
    # it comes back only under half the budget, dozens of pool calls later.
    slow = where[3:]
    inline_slow = slow.index("pool")
    assert 1 <= inline_slow <= 3 and slow[inline_slow:] == ["pool"] * (5 - inline_slow)


def test_a_model_slow_for_a_while_comes_back_inline(runtime: Recording) -> None:
    async def steps(predictor: ThreadedPredictor, x: dict[str, Array]) -> None:
        for _ in range(3):
            await predictor.predict(x, None)
        runtime.delay = 0.01
        for _ in range(4):  # slow: off the loop within three calls
            await predictor.predict(x, None)
        assert predictor.inline_buckets() == []
        runtime.delay = 0.0
        for _ in range(150):  # fast again, on the pool: the average drifts back under 1 ms
            await predictor.predict(x, None)
        assert predictor.inline_buckets() == [1]

    where = _drive(runtime, 1_000, steps)
    assert where[6] == "pool"  # the fourth slow call ran on the pool
    back = where[7:].index("loop")  # pool calls before the first inline one again
    assert 10 < back < 100 and where[7 + back :] == ["loop"] * (150 - back)


def test_inline_calls_record_stage_metrics(runtime: Recording) -> None:
    metrics = Metrics()
    assert _run(runtime, 5_000, [2, 2, 2], metrics) == ["pool", "loop", "loop"]
    labels = {"model": "ident", "version": "1"}
    assert metrics.registry.get_sample_value("serving_compute_duration_seconds_count", labels) == 3
    assert metrics.registry.get_sample_value("serving_batch_size_sum", labels) == 6
    assert metrics.registry.get_sample_value("serving_queue_depth", labels) == 0

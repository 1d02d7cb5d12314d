"""Stage metrics of the unbatched predictor on a real runtime and a real thread pool: queue
wait covers the time until a thread is free, queue depth returns to 0 also for a call that
is cancelled before it ever ran."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from serving.modelconfig import load_config
from serving.observability.metrics import Metrics
from serving.predict.predictor import ThreadedPredictor
from serving.runtimes.base import load_runtime
from serving.settings import Settings
from tests.tinymodels import write_identity_model
from tests.waiting import wait_until_async


def _value(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def test_queue_wait_depth_and_cancellation(tmp_path: Path) -> None:
    model_dir = write_identity_model(tmp_path, "ident", "FP32", width=3)
    runtime = load_runtime(
        load_config(model_dir / "config.yaml"), model_dir / "1", Settings(model_repo=tmp_path)
    )
    metrics = Metrics()
    labels = {"model": "ident", "version": "1"}
    executor = ThreadPoolExecutor(max_workers=1)
    predictor = ThreadedPredictor(runtime, executor, metrics=metrics, model="ident", version="1")
    inputs = {"x": np.ones((4, 3), dtype=np.float32)}
    release = threading.Event()

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        blocker = loop.run_in_executor(executor, release.wait, 10)  # the only thread is busy
        waiting = asyncio.ensure_future(predictor.predict(inputs, None))
        cancelled = asyncio.ensure_future(predictor.predict(inputs, None))
        await wait_until_async(
            lambda: _value(metrics, "serving_queue_depth", **labels) == 2, 10, message="never queued"
        )
        assert _value(metrics, "serving_queue_depth", **labels) == 2
        cancelled.cancel()  # never picked up by a thread
        # deliberate: one turn of the loop, no time: the cancelled call leaves the queue in it
        await asyncio.sleep(0)
        assert _value(metrics, "serving_queue_depth", **labels) == 1
        # deliberate: the thread stays busy 0.15 s, so the queued call's wait is past the 0.1 s bucket
        await asyncio.sleep(0.15)
        release.set()
        await blocker
        outputs = await waiting
        np.testing.assert_array_equal(outputs["y"], inputs["x"])
        assert cancelled.cancelled()

    try:
        asyncio.run(scenario())
    finally:
        executor.shutdown()
    assert _value(metrics, "serving_queue_depth", **labels) == 0
    assert _value(metrics, "serving_compute_duration_seconds_count", **labels) == 1
    assert _value(metrics, "serving_batch_size_sum", **labels) == 4
    assert _value(metrics, "serving_queue_wait_seconds_count", **labels) == 1
    # it waited >= 0.15 s for the busy thread: not in the 0.1 s bucket (and well under 2.5 s)
    assert _value(metrics, "serving_queue_wait_seconds_bucket", **labels, le="0.1") == 0
    assert _value(metrics, "serving_queue_wait_seconds_bucket", **labels, le="2.5") == 1

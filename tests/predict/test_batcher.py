"""The dynamic batcher against real runtimes: results split back exactly, overload, deadline,
error fan-out, adaptive mode and close."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from serving.errors import DeadlineExceeded, ModelNotReady, Overloaded, RuntimeFault
from serving.observability.metrics import Metrics
from serving.predict.batching import DynamicBatcher
from serving.runtimes.base import Runtime
from tests.predict.models import N_FEATURES, load, write_onnx_model, write_xgb_model
from tests.waiting import wait_until_async

ROW_COUNTS = [1, 3, 2, 5, 1, 7, 4, 1, 2, 6]
Body = Callable[[DynamicBatcher], Awaitable[Any]]


def _rows(count: int, seed: int, features: int = N_FEATURES) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, features)).astype(np.float32)


def _sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def _queued(metrics: Metrics, count: int) -> None:
    """Until ``count`` requests wait in the batcher's queue (its queue-depth gauge)."""
    await wait_until_async(
        lambda: _sample(metrics, "serving_queue_depth", model="m", version="1") == count,
        timeout=10,
        message=f"{count} requests never waited in the queue",
    )


def _run(runtime: Runtime, body: Body, metrics: Metrics | None = None, **options: Any) -> Any:
    """Run ``body(batcher)`` on a fresh event loop with a real thread pool."""

    async def main() -> Any:
        with ThreadPoolExecutor(2) as pool:
            batcher = DynamicBatcher(runtime, pool, metrics=metrics, model="m", version="1", **options)
            try:
                return await body(batcher)
            finally:
                await batcher.close()

    return asyncio.run(main())


@pytest.fixture(scope="module", params=["xgboost", "onnx"])
def model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Runtime, str]:
    repo = tmp_path_factory.mktemp(f"repo-{request.param}")
    if request.param == "xgboost":
        runtime, _ = load(write_xgb_model(repo))
        return runtime, "input"
    runtime, _ = load(write_onnx_model(repo))
    return runtime, "X"


@pytest.fixture(scope="module")
def xgb_runtime(tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    runtime, _ = load(write_xgb_model(tmp_path_factory.mktemp("repo")))
    return runtime


def test_results_split_back_exactly(model: tuple[Runtime, str]) -> None:
    """Requests of different row counts, batched, get exactly their unbatched predictions."""
    runtime, name = model
    metrics = Metrics()
    requests = [{name: _rows(n, seed)} for seed, n in enumerate(ROW_COUNTS)]
    expected = [runtime.predict(inputs) for inputs in requests]

    async def body(batcher: DynamicBatcher) -> list[dict[str, np.ndarray]]:
        return await asyncio.gather(*(batcher.predict(inputs, None) for inputs in requests))

    results = _run(runtime, body, metrics, max_batch_size=16, max_queue_delay_us=50_000)
    for got, want, n in zip(results, expected, ROW_COUNTS, strict=True):
        assert sorted(got) == sorted(want)
        for output in want:
            assert got[output].shape[0] == n
            np.testing.assert_allclose(got[output], want[output], rtol=1e-6, atol=1e-7)
    batches = _sample(metrics, "serving_batch_size_count", model="m", version="1")
    assert _sample(metrics, "serving_batch_size_sum", model="m", version="1") == sum(ROW_COUNTS)
    # 32 rows, at most 16 per batch, whole requests only: 3 or 4 batches, not 10 calls
    assert 3 <= batches <= 4
    assert _sample(metrics, "serving_queue_wait_seconds_count", model="m", version="1") == len(ROW_COUNTS)
    assert _sample(metrics, "serving_queue_depth", model="m", version="1") == 0


def test_preferred_size_dispatches_without_waiting_out_the_delay(xgb_runtime: Runtime) -> None:
    metrics = Metrics()

    async def body(batcher: DynamicBatcher) -> float:
        start = time.perf_counter()
        await asyncio.gather(*(batcher.predict({"input": _rows(2, i)}, None) for i in range(4)))
        return time.perf_counter() - start

    # a 5 s delay: only the preferred size (8 rows) can make the batch go early
    elapsed = _run(
        xgb_runtime, body, metrics, max_batch_size=64, max_queue_delay_us=5_000_000, preferred_batch_sizes=[8]
    )
    assert elapsed < 2.0
    assert _sample(metrics, "serving_batch_size_count", model="m", version="1") == 1
    assert _sample(metrics, "serving_batch_size_sum", model="m", version="1") == 8


def test_overload_rejects_past_max_queue_size(xgb_runtime: Runtime) -> None:
    metrics = Metrics()

    async def body(batcher: DynamicBatcher) -> list[Any]:
        first = [asyncio.ensure_future(batcher.predict({"input": _rows(1, i)}, None)) for i in range(2)]
        await _queued(metrics, 2)  # the 300 ms delay holds the batch
        with pytest.raises(Overloaded, match="max_queue_size 2"):
            await batcher.predict({"input": _rows(1, 9)}, None)
        return await asyncio.gather(*first)

    results = _run(
        xgb_runtime, body, metrics, max_batch_size=64, max_queue_delay_us=300_000, max_queue_size=2
    )
    assert [r["probabilities"].shape for r in results] == [(1, 3), (1, 3)]
    # the dataplane counts the refusal, once, from the error (tests/test_dataplane.py)
    assert _sample(metrics, "serving_rejections_total", model="m", reason="overload") == 0


def test_expired_deadline_is_dropped_before_compute(xgb_runtime: Runtime) -> None:
    metrics = Metrics()

    async def body(batcher: DynamicBatcher) -> dict[str, np.ndarray]:
        late = asyncio.ensure_future(batcher.predict({"input": _rows(3, 1)}, time.monotonic() + 0.01))
        ok = asyncio.ensure_future(batcher.predict({"input": _rows(2, 2)}, time.monotonic() + 30))
        with pytest.raises(DeadlineExceeded):
            await late
        return await ok

    result = _run(xgb_runtime, body, metrics, max_batch_size=64, max_queue_delay_us=200_000)
    assert result["probabilities"].shape == (2, 3)
    # the dataplane counts the refusal, once, from the error (tests/test_dataplane.py)
    assert _sample(metrics, "serving_rejections_total", model="m", reason="deadline") == 0
    # the expired request's 3 rows never reached the runtime
    assert _sample(metrics, "serving_batch_size_sum", model="m", version="1") == 2


def test_batch_error_reaches_every_waiter(xgb_runtime: Runtime) -> None:
    """XGBoost itself rejects the batch (wrong feature count): each request gets the error."""

    async def body(batcher: DynamicBatcher) -> list[Any]:
        return await asyncio.gather(
            *(batcher.predict({"input": _rows(n, n, features=7)}, None) for n in (1, 2, 3)),
            return_exceptions=True,
        )

    results = _run(xgb_runtime, body, max_batch_size=64, max_queue_delay_us=50_000)
    assert len(results) == 3
    for result in results:
        assert isinstance(result, RuntimeFault)
        assert "batch of 6 rows" in result.message


def test_batcher_keeps_serving_after_a_failed_batch(xgb_runtime: Runtime) -> None:
    async def body(batcher: DynamicBatcher) -> dict[str, np.ndarray]:
        with pytest.raises(RuntimeFault):
            await batcher.predict({"input": _rows(1, 0, features=7)}, None)
        return await batcher.predict({"input": _rows(2, 0)}, None)

    result = _run(xgb_runtime, body, max_batch_size=64, max_queue_delay_us=0)
    np.testing.assert_allclose(
        result["probabilities"], xgb_runtime.predict({"input": _rows(2, 0)})["probabilities"]
    )


def test_adaptive_mode_runs_alone_when_idle_and_batches_bursts(xgb_runtime: Runtime) -> None:
    metrics = Metrics()

    async def body(batcher: DynamicBatcher) -> float:
        start = time.perf_counter()
        for i in range(5):  # one at a time: each is its own batch, no waiting
            await batcher.predict({"input": _rows(1, i)}, None)
        idle = time.perf_counter() - start
        await asyncio.gather(*(batcher.predict({"input": _rows(1, i)}, None) for i in range(40)))
        return idle

    idle = _run(xgb_runtime, body, metrics, max_batch_size=64, max_queue_delay_us=0)
    assert idle < 1.0
    batches = _sample(metrics, "serving_batch_size_count", model="m", version="1")
    assert _sample(metrics, "serving_batch_size_sum", model="m", version="1") == 45
    # 5 single batches, then the burst of 40 in far fewer calls than 40
    assert 6 <= batches <= 5 + 10


def test_cancelled_request_is_skipped(xgb_runtime: Runtime) -> None:
    metrics = Metrics()

    async def body(batcher: DynamicBatcher) -> dict[str, np.ndarray]:
        gone = asyncio.ensure_future(batcher.predict({"input": _rows(4, 0)}, None))
        stays = asyncio.ensure_future(batcher.predict({"input": _rows(1, 1)}, None))
        await _queued(metrics, 2)
        gone.cancel()
        return await stays

    result = _run(xgb_runtime, body, metrics, max_batch_size=64, max_queue_delay_us=100_000)
    assert result["probabilities"].shape == (1, 3)
    assert _sample(metrics, "serving_batch_size_sum", model="m", version="1") == 1


def test_close_answers_queued_requests(xgb_runtime: Runtime) -> None:
    metrics = Metrics()

    async def body(batcher: DynamicBatcher) -> None:
        queued = asyncio.ensure_future(batcher.predict({"input": _rows(1, 0)}, None))
        await _queued(metrics, 1)
        await batcher.close()
        with pytest.raises(ModelNotReady):
            await queued
        with pytest.raises(ModelNotReady):
            await batcher.predict({"input": _rows(1, 0)}, None)

    _run(xgb_runtime, body, metrics, max_batch_size=64, max_queue_delay_us=5_000_000)

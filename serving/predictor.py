"""The predict stage between router and runtime.

``Predictor`` is what the dataplane awaits. ``ThreadedPredictor`` runs a runtime's blocking
``predict`` on the shared bounded thread pool, so the event loop never blocks on a model;
the dynamic batcher (``serving.batching``) is another Predictor that wraps the same runtime.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Executor
from typing import Protocol

from serving.errors import DeadlineExceeded
from serving.metrics import Metrics, StageMetrics
from serving.runtimes.base import Runtime
from serving.types import Array, batch_rows


class Predictor(Protocol):
    async def predict(self, inputs: dict[str, Array], deadline: float | None) -> dict[str, Array]: ...

    async def close(self) -> None: ...


class ThreadedPredictor:
    """One runtime call per request on the shared pool. With ``metrics``, it records the
    version's stage metrics as the batcher does (a batch of one request): queue wait is the
    time until a pool thread picks the call up, queue depth counts calls waiting for one."""

    def __init__(
        self,
        runtime: Runtime,
        executor: Executor,
        *,
        metrics: Metrics | None = None,
        model: str = "",
        version: str = "",
    ) -> None:
        self._runtime = runtime
        self._executor = executor
        self._stage = metrics.stage(model, version) if metrics is not None else None
        self._metrics = metrics
        self._model = model
        self._lock = threading.Lock()

    async def predict(self, inputs: dict[str, Array], deadline: float | None) -> dict[str, Array]:
        loop = asyncio.get_running_loop()
        stage = self._stage
        if stage is None:
            return await loop.run_in_executor(self._executor, self._call, inputs, deadline)
        waiting = [True]  # cleared exactly once, by whichever side gets there first
        stage.queue_depth.inc()
        try:
            return await loop.run_in_executor(
                self._executor, self._timed, stage, inputs, deadline, time.perf_counter(), waiting
            )
        finally:
            if waiting[0]:  # cancelled before a thread picked it up
                with self._lock:
                    if waiting[0]:
                        waiting[0] = False
                        stage.queue_depth.dec()

    def _check_deadline(self, deadline: float | None) -> None:
        # A pool thread picked the call up: past its deadline, the caller no longer wants it.
        if deadline is not None and time.monotonic() > deadline:
            if self._metrics is not None:
                self._metrics.rejections.labels(self._model, "deadline").inc()
            raise DeadlineExceeded("the request's deadline passed while it waited for a predict thread")

    def _call(self, inputs: dict[str, Array], deadline: float | None) -> dict[str, Array]:
        self._check_deadline(deadline)
        return self._runtime.predict(inputs)

    def _timed(
        self,
        stage: StageMetrics,
        inputs: dict[str, Array],
        deadline: float | None,
        submitted: float,
        waiting: list[bool],
    ) -> dict[str, Array]:
        start = time.perf_counter()
        with self._lock:
            if waiting[0]:
                waiting[0] = False
                stage.queue_depth.dec()
        stage.queue_wait.observe(start - submitted)
        self._check_deadline(deadline)
        outputs = self._runtime.predict(inputs)
        stage.compute.observe(time.perf_counter() - start)
        stage.batch_size.observe(batch_rows(inputs))
        return outputs

    async def close(self) -> None:
        return None

"""The dynamic batcher: a Predictor stage that groups concurrent requests into one runtime call.

It wraps a runtime and has the same ``predict`` as ``ThreadedPredictor``, so the dataplane
does not know whether a version batches. Mechanics:

- The queue lives on the running event loop (created by the first ``predict``); each request
  gets one future and waits on it.
- A collector task forms a batch and hands it to the shared thread pool: blocking compute
  never runs on the loop. At most ``max_inflight_batches`` batches compute at once; requests
  that arrive meanwhile queue and form the next batch.
- **Timed** (``max_queue_delay_us > 0``): the batch goes once it holds ``max_batch_size``
  rows, reaches a preferred size, or its first request has waited ``max_queue_delay_us``.
- **Adaptive** (``max_queue_delay_us: 0``): no waiting at all. A batch goes as soon as a
  compute slot is free and holds whatever queued meanwhile: one request at low load (no
  added latency), larger batches exactly when the runtime is the bottleneck.
- Past ``max_queue_size`` waiting requests, ``predict`` raises ``Overloaded`` (503 /
  RESOURCE_EXHAUSTED) at once. A request whose deadline passed while it queued is answered
  ``DeadlineExceeded`` and never computed; a request whose caller went away is skipped.
- Inputs are concatenated along the batch dimension, the runtime runs once, and every
  output is split back by each request's row range. An error in the batch (including an
  output whose rows do not add up) is delivered to every request in it.

Requests are validated by the dataplane before they join, so one malformed request never
fails a batch. Inputs of one version share dtypes and trailing dimensions (the model config
says so), so concatenation is always well-formed.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from serving.errors import DeadlineExceeded, ModelNotReady, Overloaded, RuntimeFault
from serving.inference import Array, batch_rows
from serving.observability.metrics import Metrics
from serving.runtimes.base import Runtime

if TYPE_CHECKING:
    from serving.observability.tracing import RequestTrace

log = logging.getLogger("serving.predict.batching")


@dataclass(slots=True)
class _Pending:
    inputs: dict[str, Array]
    rows: int
    future: asyncio.Future[dict[str, Array]]
    deadline: float | None
    enqueued: float = field(default_factory=time.perf_counter)
    trace: RequestTrace | None = None
    enqueued_ns: int = 0


class DynamicBatcher:
    """Predictor that batches concurrent requests to one model version (see module doc)."""

    def __init__(
        self,
        runtime: Runtime,
        executor: Executor,
        *,
        max_batch_size: int,
        max_queue_delay_us: int = 500,
        preferred_batch_sizes: Sequence[int] = (),
        max_queue_size: int = 1024,
        max_inflight_batches: int = 1,
        metrics: Metrics | None = None,
        model: str = "",
        version: str = "",
    ) -> None:
        self._runtime = runtime
        self._executor = executor
        self._max_rows = max_batch_size
        self._delay = max_queue_delay_us / 1e6
        self._preferred = sorted(p for p in set(preferred_batch_sizes) if p <= max_batch_size)
        self._max_queue = max_queue_size
        self._max_inflight = max_inflight_batches
        self._model = model
        self._pending: deque[_Pending] = deque()
        self._pending_rows = 0
        self._inflight = 0
        self._wakeup: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._collector: asyncio.Task[None] | None = None
        self._computing: set[asyncio.Task[None]] = set()
        self._closed = False
        self._metrics = metrics
        if metrics is not None:
            self._stage = metrics.stage(model, version)
            self._m_depth = self._stage.queue_depth

    # -- the Predictor interface ---------------------------------------------------------
    async def predict(
        self, inputs: dict[str, Array], deadline: float | None, trace: RequestTrace | None = None
    ) -> dict[str, Array]:
        if self._closed:
            raise ModelNotReady(f"model '{self._model}' is unloading")
        if len(self._pending) >= self._max_queue:
            raise Overloaded(
                f"model '{self._model}': {len(self._pending)} requests already queued "
                f"(max_queue_size {self._max_queue}); retry later"
            )
        loop = self._loop
        if loop is None:
            loop = self._start()
        item = _Pending(inputs, batch_rows(inputs), loop.create_future(), deadline)
        if trace is not None:
            item.trace, item.enqueued_ns = trace, time.time_ns()
        self._pending.append(item)
        self._pending_rows += item.rows
        if self._metrics is not None:
            self._m_depth.set(len(self._pending))
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)
        return await item.future

    async def close(self) -> None:
        """Stop collecting; requests still queued are answered ModelNotReady; running
        batches finish."""
        self._closed = True
        if self._collector is not None:
            self._collector.cancel()
            await asyncio.gather(self._collector, return_exceptions=True)
        self._fail_pending(ModelNotReady(f"model '{self._model}' is unloading"))
        if self._computing:
            await asyncio.gather(*self._computing, return_exceptions=True)

    # -- collecting ----------------------------------------------------------------------
    def _start(self) -> asyncio.AbstractEventLoop:
        self._loop = asyncio.get_running_loop()
        self._collector = self._loop.create_task(self._collect(), name=f"batcher-{self._model}")
        return self._loop

    async def _sleep_until_woken(self, timeout: float | None) -> None:
        """Wait for a new request (or a free compute slot), at most ``timeout`` seconds."""
        assert self._loop is not None
        wakeup = self._loop.create_future()
        self._wakeup = wakeup
        handle = None
        if timeout is not None:
            handle = self._loop.call_later(timeout, _resolve, wakeup)
        try:
            await wakeup
        finally:
            self._wakeup = None
            if handle is not None:
                handle.cancel()

    def _ready_to_go(self) -> bool:
        rows = self._pending_rows
        if rows >= self._max_rows:
            return True
        return bool(self._preferred) and (rows in self._preferred or rows >= self._preferred[-1])

    async def _collect(self) -> None:
        try:
            await self._collect_forever()
        except Exception as exc:  # a bug here must not leave callers waiting forever
            log.exception("model %s: batch collector failed", self._model)
            self._fail_pending(RuntimeFault(f"model '{self._model}': batcher failed: {exc}"))
            self._loop = None  # the next predict starts a fresh collector

    async def _collect_forever(self) -> None:
        while True:
            if not self._pending or self._inflight >= self._max_inflight:
                await self._sleep_until_woken(None)
                continue
            if self._delay > 0 and not self._ready_to_go():
                remaining = self._pending[0].enqueued + self._delay - time.perf_counter()
                if remaining > 0:
                    await self._sleep_until_woken(remaining)
                    continue  # re-check: more rows, a preferred size, or the timer
            batch = self._take()
            if batch:
                self._inflight += 1
                task = asyncio.get_running_loop().create_task(self._compute(batch))
                self._computing.add(task)
                task.add_done_callback(self._computing.discard)

    def _take(self) -> list[_Pending]:
        """Pop the next batch: whole requests, at most ``max_batch_size`` rows (a larger
        single request runs alone), cut at a preferred size when one fits."""
        limit = self._max_rows
        if self._preferred:
            available = min(self._pending_rows, self._max_rows)
            at = bisect.bisect_right(self._preferred, available)
            if at:
                limit = self._preferred[at - 1]
        batch: list[_Pending] = []
        rows = 0
        now = time.monotonic()
        pending = self._pending
        while pending:
            item = pending[0]
            if batch and rows + item.rows > limit:
                break
            pending.popleft()
            self._pending_rows -= item.rows
            if item.future.done():  # the caller went away
                continue
            if item.deadline is not None and now > item.deadline:
                late = DeadlineExceeded("the request's deadline passed while it waited for a batch")
                if item.trace is not None:
                    item.trace.child("queue wait", item.enqueued_ns, None, error=late)
                item.future.set_exception(late)
                continue
            batch.append(item)
            rows += item.rows
        if self._metrics is not None:
            self._m_depth.set(len(pending))
        return batch

    # -- computing -----------------------------------------------------------------------
    async def _compute(self, batch: list[_Pending]) -> None:
        started_ns = time.time_ns()
        try:
            start = time.perf_counter()
            if self._metrics is not None:
                for item in batch:
                    self._stage.waited(start - item.enqueued)
            inputs = _concatenate(batch)
            rows = sum(item.rows for item in batch)
            loop = asyncio.get_running_loop()
            try:
                outputs = await loop.run_in_executor(self._executor, self._runtime.predict, inputs)
                results = _split(outputs, batch, rows)
            except Exception as exc:
                log.exception("model %s: batch of %d requests failed", self._model, len(batch))
                error = (
                    exc
                    if isinstance(exc, RuntimeFault)
                    else RuntimeFault(
                        f"model '{self._model}' failed on a batch of {rows} rows: {type(exc).__name__}: {exc}"
                    )
                )
                _trace_batch(batch, started_ns, rows, error)
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                return
            if self._metrics is not None:
                self._stage.executed(rows, time.perf_counter() - start, len(batch))
            _trace_batch(batch, started_ns, rows, None)
            for item, result in zip(batch, results, strict=True):
                if not item.future.done():
                    item.future.set_result(result)
        finally:
            self._inflight -= 1
            wakeup = self._wakeup
            if wakeup is not None and not wakeup.done():
                wakeup.set_result(None)

    def _fail_pending(self, error: Exception) -> None:
        while self._pending:
            item = self._pending.popleft()
            if not item.future.done():
                item.future.set_exception(error)
        self._pending_rows = 0


def _trace_batch(batch: list[_Pending], started_ns: int, rows: int, error: BaseException | None) -> None:
    """The batch's ``compute`` span and each sampled request's ``queue wait``, linked (see
    serving.observability.tracing); nothing when no request in it is sampled."""
    traced = [(item.trace, item.enqueued_ns) for item in batch if item.trace is not None]
    if traced:
        from serving.observability.tracing import record_batch  # loaded: a request is traced

        record_batch(traced, started_ns, time.time_ns(), rows, len(batch), error)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _concatenate(batch: list[_Pending]) -> dict[str, Array]:
    if len(batch) == 1:
        return batch[0].inputs  # no copy for a batch of one
    return {name: np.concatenate([item.inputs[name] for item in batch]) for name in batch[0].inputs}


def _split(outputs: dict[str, Array], batch: list[_Pending], rows: int) -> list[dict[str, Array]]:
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != rows:
            raise RuntimeFault(
                f"output '{name}' has shape {list(array.shape)}; expected {rows} rows, one per input row"
            )
    if len(batch) == 1:
        return [outputs]
    results: list[dict[str, Any]] = []
    start = 0
    for item in batch:
        stop = start + item.rows
        results.append({name: array[start:stop] for name, array in outputs.items()})
        start = stop
    return results

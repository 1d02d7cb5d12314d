"""The predict stage between router and runtime.

``Predictor`` is what the dataplane awaits. ``ThreadedPredictor`` runs a runtime's blocking
``predict`` on the shared bounded thread pool, except calls it has measured to be cheaper
than the hop itself, which it runs inline on the event loop (see ``ThreadedPredictor``);
the dynamic batcher (``serving.predict.batching``) is another Predictor that wraps the same runtime.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Protocol

from serving.errors import DeadlineExceeded
from serving.inference import Array, batch_rows
from serving.observability.metrics import Metrics, StageMetrics
from serving.runtimes.base import Runtime

if TYPE_CHECKING:
    from serving.observability.tracing import RequestTrace

_COST_WEIGHT = 0.125
"""Weight of the newest call in a bucket's moving average of compute time (about the last
eight calls count), so a model that slows down under load leaves the event loop quickly."""

_RETRY_WEIGHT = 1 / 32
"""How fast a bucket that left the loop drifts back toward its pool cost (see _record_pool)."""

_RETURN_SHARE = 0.5
"""A bucket that left the loop returns once its average is under this share of the budget:
hysteresis, so a model whose cost sits at the budget does not flap between loop and pool."""

_SPIKE_CAP = 4.0
"""Samples count at most this many budgets: one call stretched by the OS scheduling other
work, or by a GC pause, does not move a cheap model off the loop; a model that is really
slower leaves within three calls."""


class Predictor(Protocol):
    async def predict(
        self, inputs: dict[str, Array], deadline: float | None, trace: RequestTrace | None = None
    ) -> dict[str, Array]:
        """Outputs for ``inputs``; a sampled request's ``trace`` gets ``queue wait`` and
        ``compute`` spans (the dataplane passes it only when there is one)."""
        ...

    async def close(self) -> None: ...


class ThreadedPredictor:
    """One runtime call per request, on the shared pool or inline.

    Handing a call to a pool thread and back costs 30-80 µs of CPU (futures, a thread
    wake-up, two GIL hand-overs): more than a one-row predict of a small booster or ONNX
    graph (5-60 µs). So the predictor keeps a moving average of compute time per
    power-of-two row count, and runs a call inline when that average is at most
    ``inline_budget_us`` (default 100 µs, about what handling one request costs anyway). A
    row count it has not seen yet, or one that got slower than the budget, goes to the pool
    (whose calls keep the average current), so a heavy model or a large batch does not run
    on the loop. ``inline_budget_us=0`` always uses the pool.

    Inline calls are timed by the wall clock (how long the loop was blocked), and that
    average decides. Before a row count has run inline, the pool's measure is the guess:
    the pool thread's CPU time, because the wall time of a pool call includes waiting to take
    the GIL back from the busy event loop (150-300 µs measured around a 7 µs call), which
    would keep every model on the pool. CPU time misses a runtime that waits on threads of
    its own; its first inline calls show that and send it back. Samples are capped at four
    budgets (``_SPIKE_CAP``), so one preempted call does not move a model off the loop; one
    that left returns when its average, drifting toward the pool's measure, is under half
    the budget.

    With ``metrics`` it records the version's stage metrics as the batcher does (a batch of
    one request): queue wait is the time until a pool thread picks the call up (zero
    inline), queue depth counts calls waiting for one."""

    def __init__(
        self,
        runtime: Runtime,
        executor: Executor,
        *,
        metrics: Metrics | None = None,
        model: str = "",
        version: str = "",
        inline_budget_us: float = 0.0,
    ) -> None:
        self._runtime = runtime
        self._executor = executor
        self._stage = metrics.stage(model, version) if metrics is not None else None
        self._metrics = metrics
        self._model = model
        self._lock = threading.Lock()
        self._budget = inline_budget_us * 1e-6
        self._cap = self._budget * _SPIKE_CAP if self._budget else float("inf")
        # rows.bit_length() -> moving averages of seconds per runtime call: wall time of inline
        # calls, thread CPU time of pool calls. Written by pool threads and the loop; a dict
        # item store is atomic under the GIL.
        self._inline_cost: dict[int, float] = {}
        self._pool_cost: dict[int, float] = {}
        self._left: set[int] = set()  # buckets that went over the budget inline

    def inline_buckets(self) -> list[int]:
        """Row-count buckets (``rows.bit_length()``) currently served inline; for tests."""
        buckets = set(self._inline_cost) | set(self._pool_cost)
        return sorted(b for b in buckets if self._runs_inline(b))

    def _runs_inline(self, bucket: int) -> bool:
        # What inline calls cost is the measure; before any, the pool's CPU time is the guess.
        cost = self._inline_cost.get(bucket)
        if cost is None:
            cost = self._pool_cost.get(bucket)
        if cost is None:
            return False
        if bucket in self._left:
            if cost > self._budget * _RETURN_SHARE:
                return False
            self._left.discard(bucket)
        return cost <= self._budget

    async def predict(
        self, inputs: dict[str, Array], deadline: float | None, trace: RequestTrace | None = None
    ) -> dict[str, Array]:
        if trace is not None:
            return await self._traced(inputs, deadline, trace)
        return await self._predict(inputs, deadline, None)

    async def _predict(
        self, inputs: dict[str, Array], deadline: float | None, marks: list[int] | None
    ) -> dict[str, Array]:
        rows = batch_rows(inputs)
        bucket = rows.bit_length()
        if self._budget and self._runs_inline(bucket):
            return self._inline(inputs, bucket, rows, marks)
        loop = asyncio.get_running_loop()
        stage = self._stage
        if stage is None:
            return await loop.run_in_executor(self._executor, self._call, inputs, deadline, bucket, marks)
        waiting = [True]  # cleared exactly once, by whichever side gets there first
        stage.queue_depth.inc()
        try:
            return await loop.run_in_executor(
                self._executor,
                self._timed,
                stage,
                inputs,
                deadline,
                rows,
                time.perf_counter(),
                waiting,
                marks,
            )
        finally:
            if waiting[0]:  # cancelled before a thread picked it up
                with self._lock:
                    if waiting[0]:
                        waiting[0] = False
                        stage.queue_depth.dec()

    async def _traced(
        self, inputs: dict[str, Array], deadline: float | None, trace: RequestTrace
    ) -> dict[str, Array]:
        """``predict`` for a sampled request: the same path, with wall-clock marks around the
        runtime call (``marks``: [start, end]; ``inline`` when it ran on the loop). A pool
        call's ``queue wait`` ends when a thread starts the call, so it includes the hop; an
        inline call has no queue, only ``compute``."""
        submitted = time.time_ns()
        marks: list[int] = []
        error: BaseException | None = None
        try:
            return await self._predict(inputs, deadline, marks)
        except BaseException as exc:
            error = exc
            raise
        finally:
            if marks:  # compute started (marks[1] is missing when the runtime raised)
                if len(marks) != 3:  # not inline
                    trace.child("queue wait", submitted, marks[0])
                rows = {"serving.scoring.rows": batch_rows(inputs)}
                end = marks[1] if len(marks) > 1 else None
                trace.child("compute", marks[0], end, rows, error=error)
            elif error is not None:  # refused before compute (its deadline passed in the queue)
                trace.child("queue wait", submitted, None, error=error)

    def _record_inline(self, bucket: int, seconds: float) -> None:
        seconds = min(seconds, self._cap)
        previous = self._inline_cost.get(bucket)
        cost = seconds if previous is None else previous + _COST_WEIGHT * (seconds - previous)
        self._inline_cost[bucket] = cost
        if cost > self._budget:
            self._left.add(bucket)

    def _record_pool(self, bucket: int, cpu_seconds: float) -> None:
        cpu_seconds = min(cpu_seconds, self._cap)
        previous = self._pool_cost.get(bucket)
        self._pool_cost[bucket] = (
            cpu_seconds if previous is None else previous + _COST_WEIGHT * (cpu_seconds - previous)
        )
        # A bucket that left the loop drifts back toward its pool cost, so one that was only
        # slow for a while (a noisy neighbour) is tried inline again a few dozen calls later,
        # while one that waits on other threads (wall >> CPU) is retried that rarely.
        inline = self._inline_cost.get(bucket)
        if inline is not None and bucket in self._left:
            self._inline_cost[bucket] = inline + _RETRY_WEIGHT * (cpu_seconds - inline)

    def _inline(
        self, inputs: dict[str, Array], bucket: int, rows: int, marks: list[int] | None = None
    ) -> dict[str, Array]:
        # The dataplane checked the deadline just before; nothing waited since.
        if marks is not None:
            marks.append(time.time_ns())
        start = time.perf_counter()
        outputs = self._runtime.predict(inputs)
        elapsed = time.perf_counter() - start
        if marks is not None:
            marks += (time.time_ns(), 0)  # a third mark: ran inline
        self._record_inline(bucket, elapsed)
        stage = self._stage
        if stage is not None:
            stage.served(0.0, rows, elapsed)
        return outputs

    def _check_deadline(self, deadline: float | None) -> None:
        # A pool thread picked the call up: past its deadline, the caller no longer wants it.
        if deadline is not None and time.monotonic() > deadline:
            raise DeadlineExceeded("the request's deadline passed while it waited for a predict thread")

    def _call(
        self, inputs: dict[str, Array], deadline: float | None, bucket: int, marks: list[int] | None
    ) -> dict[str, Array]:
        self._check_deadline(deadline)
        if marks is not None:
            marks.append(time.time_ns())
        cpu = time.thread_time()
        outputs = self._runtime.predict(inputs)
        self._record_pool(bucket, time.thread_time() - cpu)
        if marks is not None:
            marks.append(time.time_ns())
        return outputs

    def _timed(
        self,
        stage: StageMetrics,
        inputs: dict[str, Array],
        deadline: float | None,
        rows: int,
        submitted: float,
        waiting: list[bool],
        marks: list[int] | None = None,
    ) -> dict[str, Array]:
        start = time.perf_counter()
        with self._lock:
            if waiting[0]:
                waiting[0] = False
                stage.queue_depth.dec()
        stage.waited(start - submitted)
        self._check_deadline(deadline)
        if marks is not None:
            marks.append(time.time_ns())
        cpu = time.thread_time()
        outputs = self._runtime.predict(inputs)
        self._record_pool(rows.bit_length(), time.thread_time() - cpu)
        if marks is not None:
            marks.append(time.time_ns())
        stage.executed(rows, time.perf_counter() - start)
        return outputs

    async def close(self) -> None:
        return None

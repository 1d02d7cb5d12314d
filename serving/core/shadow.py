"""Shadow traffic: copies of some requests run on a shadow version, off the caller's path.

The dataplane answers the caller from the primary version first and then hands the inputs
and the primary's outputs to ``ShadowRunner.submit``, which only does a non-blocking put
on a bounded queue (full: the copy is dropped and counted). One background task takes
copies off the queue and runs the shadow version's runtime on the runner's own thread, so a
slow shadow never holds a thread of the primary's predict pool, and compares outputs:

- ``serving_shadow_comparisons_total{model, primary_version, shadow_version, result}``
  with result ``match``, ``mismatch`` (largest absolute difference above the policy's
  ``shadow_tolerance``, or different shapes) or ``error`` (the shadow raised);
- ``serving_shadow_abs_diff`` histogram of the largest absolute difference per request;
- ``serving_shadow_rows_total{model, primary_version, shadow_version, output, result}``: for
  classifier outputs, rows whose predicted class (bucketed as ``serving_predictions_total``)
  agrees or disagrees: a retrained model differs in every probability but rarely in its
  answer, and the rollout's shadow gate judges the answers;
- ``serving_shadow_dropped_total{model}``: copies dropped because the queue was full;
- ``serving_shadow_requests_total{model, version, protocol, outcome}`` and
  ``serving_shadow_duration_seconds``: each run, outside ``serving_requests_total`` (which
  counts what the adapters received, once).

The shadow version's ``inflight`` count covers the run, so unloading it waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from serving.core.router import SHADOW
from serving.inference import Array
from serving.labels import INTERNAL, Edge
from serving.observability.metrics import Metrics
from serving.observability.predictions import OutputRule, output_rules
from serving.repository.store import ModelVersion

if TYPE_CHECKING:
    from serving.observability.tracing import RequestTrace

log = logging.getLogger("serving.core.shadow")


@dataclass(slots=True)
class _Copy:
    shadow: ModelVersion
    primary_version: str
    inputs: dict[str, Array]
    primary: dict[str, Array]
    tolerance: float
    edge: Edge | None
    trace: RequestTrace | None = None


def max_abs_diff(primary: dict[str, Array], shadow: dict[str, Array]) -> float:
    """Largest absolute difference over the outputs both produced; ``inf`` when shapes or
    output names differ, or a NaN sits where the other side has a number."""
    worst = 0.0
    for name, expected in primary.items():
        got = shadow.get(name)
        if got is None or got.shape != expected.shape:
            return float("inf")
        if expected.dtype.kind in "OSUb" or got.dtype.kind in "OSUb":
            if not np.array_equal(expected, got):
                return float("inf")
            continue
        a = expected.astype(np.float64, copy=False)
        b = got.astype(np.float64, copy=False)
        diff = np.abs(a - b)
        both_nan = np.isnan(a) & np.isnan(b)
        if both_nan.any():
            diff[both_nan] = 0.0
        if diff.size:
            worst = max(worst, float(np.max(diff)) if not np.isnan(diff).any() else float("inf"))
    return worst


def _shadow_span(copy: _Copy, started_ns: int, result: str, error: BaseException | None) -> None:
    """The copy's own span in the primary's trace, linked to the primary's server span."""
    assert copy.trace is not None
    attributes = {
        "serving.model": copy.shadow.model,
        "serving.model.version": copy.shadow.version,
        "serving.variant": SHADOW,
        "serving.core.shadow.primary_version": copy.primary_version,
        "serving.core.shadow.result": result,
    }
    copy.trace.child(f"shadow {copy.shadow.model}", started_ns, None, attributes, [copy.trace.link()], error)


class ShadowRunner:
    """Bounded, asynchronous shadow execution and comparison (see the module docstring)."""

    def __init__(self, metrics: Metrics, queue_size: int = 64) -> None:
        self._metrics = metrics
        self._queue_size = queue_size
        self._queue: asyncio.Queue[_Copy] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.completed = 0
        self.dropped = 0
        self._rules: dict[str, tuple[object, tuple[OutputRule, ...]]] = {}
        """model -> (the config its class rules were read from, the rules)"""

    def submit(
        self,
        shadow: ModelVersion,
        primary_version: str,
        inputs: dict[str, Array],
        primary: dict[str, Array],
        tolerance: float,
        edge: Edge | None,
        trace: RequestTrace | None = None,
    ) -> bool:
        """Queue a copy without waiting; False (and counted) when the queue is full.
        Call from the event loop. ``edge`` (the primary request's adapter) labels the shadow
        run in ``serving_requests_total``; None leaves it uncounted there. ``trace`` (the
        primary's, when sampled) gets a ``shadow <model>`` span linked to it."""
        if self._queue is None:
            self._queue = asyncio.Queue(self._queue_size)
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shadow")
            self._task = asyncio.get_running_loop().create_task(self._run(self._queue))
        try:
            self._queue.put_nowait(_Copy(shadow, primary_version, inputs, primary, tolerance, edge, trace))
        except asyncio.QueueFull:
            self.dropped += 1
            self._metrics.shadow_dropped.labels(shadow.model).inc()
            return False
        return True

    async def _run(self, queue: asyncio.Queue[_Copy]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            copy = await queue.get()
            try:
                await self._one(loop, copy)
            except Exception:  # the shadow path must never die; the log has the cause
                log.exception("shadow comparison failed for %s", copy.shadow.model)
            finally:
                queue.task_done()

    async def _one(self, loop: asyncio.AbstractEventLoop, copy: _Copy) -> None:
        entry = copy.shadow
        runtime = entry.runtime
        if not entry.ready or runtime is None:
            return  # unloaded since the copy was queued
        model, version = entry.model, entry.version
        labels = (model, copy.primary_version, version)
        start = time.perf_counter()
        started_ns = time.time_ns() if copy.trace is not None else 0
        entry.inflight += 1
        try:
            outputs = await loop.run_in_executor(self._executor, runtime.predict, copy.inputs)
        except Exception as exc:
            log.warning("shadow %s version %s failed: %s: %s", model, version, type(exc).__name__, exc)
            self._metrics.shadow_comparisons.labels(*labels, "error").inc()
            if copy.trace is not None:
                _shadow_span(copy, started_ns, "error", exc)
            if copy.edge is not None:
                self._metrics.observe_shadow(
                    model,
                    version,
                    copy.edge.protocol,
                    copy.edge.of_error(INTERNAL),
                    time.perf_counter() - start,
                )
            return
        finally:
            entry.inflight -= 1
        seconds = time.perf_counter() - start
        if copy.edge is not None:
            self._metrics.observe_shadow(model, version, copy.edge.protocol, copy.edge.ok, seconds)
        self._count_classes(copy, outputs)
        diff = max_abs_diff(copy.primary, outputs)
        if diff != float("inf"):
            self._metrics.shadow_abs_diff.labels(*labels).observe(diff)
        result = "match" if diff <= copy.tolerance else "mismatch"
        self._metrics.shadow_comparisons.labels(*labels, result).inc()
        if copy.trace is not None:
            _shadow_span(copy, started_ns, result, None)
        self.completed += 1

    def _count_classes(self, copy: _Copy, outputs: dict[str, Array]) -> None:
        config = copy.shadow.config
        cached = self._rules.get(copy.shadow.model)
        if cached is None or cached[0] is not config:
            specs = [(o.name, o.datatype, o.shape) for o in config.outputs]
            rules = tuple(r for r in output_rules(specs, config.prediction_buckets) if r.kind == "class")
            cached = self._rules[copy.shadow.model] = (config, rules)
        for rule in cached[1]:
            primary, shadow = copy.primary.get(rule.name), outputs.get(rule.name)
            if primary is None or shadow is None or primary.shape[:1] != shadow.shape[:1]:
                continue
            differ = int(np.count_nonzero(rule.buckets(primary) != rule.buckets(shadow)))
            labels = (copy.shadow.model, copy.primary_version, copy.shadow.version, rule.name)
            if differ:
                self._metrics.shadow_rows.labels(*labels, "disagree").inc(differ)
            if differ < primary.shape[0]:
                self._metrics.shadow_rows.labels(*labels, "agree").inc(primary.shape[0] - differ)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait until every queued copy has been compared (tests, shutdown)."""
        if self._queue is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._queue = None

"""Per-version inference statistics in the shape of Triton's statistics extension.

The numbers come from the measurements the Prometheus collectors record, in the same calls
(``serving.observability.metrics``): the adapter's end-to-end duration and outcome (``observe_request``)
feeds ``success``/``fail``; a predictor stage's queue wait, compute time and rows
(``StageMetrics``) feed ``queue``, ``compute_infer``, ``batch_stats``, ``inference_count`` and
``execution_count``. So ``/v2/models/{m}/stats`` and ``/metrics`` never disagree about what
happened, and the hot path pays a few integer additions, not a second measurement.

What Triton splits and we do not: ``compute_input`` and ``compute_output`` (copying tensors in
and out of the framework) are part of ``compute_infer`` here; they are reported with the
execution count and 0 ns, so tools that add the three get the right compute time.

Counts are per process: with ``--workers N`` each worker answers with its own statistics (as
each Triton instance does), while ``/metrics`` merges the workers.
"""

from __future__ import annotations

import threading
import time
from typing import Any

_time = time.time  # seconds since the epoch; ``last_inference`` is its milliseconds


class VersionStats:
    """Cumulative counters of one model version. Durations add up as float seconds (exact to
    the nanosecond up to ~100 days of summed time) and become integer ns when read.

    Edge fields (success, fail, last inference) are written only on the event loop (REST and
    gRPC share the process's one loop), so they take no lock; stage fields are also written
    by predict threads (``ThreadedPredictor`` off the loop), so those updates hold the lock."""

    __slots__ = (
        "_lock",
        "batches",
        "compute_count",
        "compute_s",
        "execution_count",
        "fail_count",
        "fail_s",
        "inference_count",
        "last_inference_at",
        "queue_count",
        "queue_s",
        "success_count",
        "success_s",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.success_count = self.fail_count = self.queue_count = self.compute_count = 0
        self.success_s = self.fail_s = self.queue_s = self.compute_s = 0.0  # seconds, summed
        self.inference_count = self.execution_count = 0
        self.last_inference_at = 0.0
        self.batches: dict[int, list[float]] = {}  # rows -> [executions, compute seconds]

    # -- hot path ---------------------------------------------------------------------------
    def succeeded(self, seconds: float) -> None:
        self.success_count += 1
        self.success_s += seconds
        self.last_inference_at = _time()

    def failed(self, seconds: float) -> None:
        self.fail_count += 1
        self.fail_s += seconds

    def queued(self, seconds: float) -> None:
        with self._lock:
            self.queue_count += 1
            self.queue_s += seconds

    def served(self, wait: float, rows: int, seconds: float) -> None:
        """``queued`` and ``executed`` for one request that ran alone, under one lock."""
        with self._lock:
            self.queue_count += 1
            self.queue_s += wait
            self.execution_count += 1
            self.inference_count += rows
            self.compute_count += 1
            self.compute_s += seconds
            self._batch(rows, seconds)

    def executed(self, rows: int, seconds: float, requests: int) -> None:
        """One runtime call over ``rows`` rows serving ``requests`` requests: each request
        is charged the call's time, as Triton charges every request of a batch."""
        with self._lock:
            self.execution_count += 1
            self.inference_count += rows
            self.compute_count += requests
            self.compute_s += seconds * requests
            self._batch(rows, seconds)

    def _batch(self, rows: int, seconds: float) -> None:
        """One runtime call of ``rows`` rows in ``batch_stats`` (caller holds the lock)."""
        batch = self.batches.get(rows)
        if batch is None:
            self.batches[rows] = [1, seconds]
        else:
            batch[0] += 1
            batch[1] += seconds

    # -- reads ------------------------------------------------------------------------------
    def snapshot(self, name: str, version: str) -> dict[str, Any]:
        """Triton's ``ModelStatistics`` as a dict (its JSON spelling over REST; the gRPC
        adapter parses the same dict into the message)."""
        with self._lock:
            executions = self.execution_count
            batches = sorted((rows, list(v)) for rows, v in self.batches.items())
            return {
                "name": name,
                "version": version,
                "last_inference": int(self.last_inference_at * 1000),
                "inference_count": self.inference_count,
                "execution_count": executions,
                "inference_stats": {
                    "success": _duration(self.success_count, self.success_s),
                    "fail": _duration(self.fail_count, self.fail_s),
                    "queue": _duration(self.queue_count, self.queue_s),
                    "compute_input": _duration(self.compute_count, 0),
                    "compute_infer": _duration(self.compute_count, self.compute_s),
                    "compute_output": _duration(self.compute_count, 0),
                },
                "batch_stats": [
                    {
                        "batch_size": rows,
                        "compute_input": _duration(count, 0),
                        "compute_infer": _duration(count, ns),
                        "compute_output": _duration(count, 0),
                    }
                    for rows, (count, ns) in batches
                ],
            }


def _duration(count: float, seconds: float) -> dict[str, int]:
    return {"count": int(count), "ns": round(seconds * 1e9)}


class Statistics:
    """Every version's ``VersionStats``, created on first use (keys are bounded: only
    served model names and their versions are recorded)."""

    def __init__(self) -> None:
        self._versions: dict[tuple[str, str], VersionStats] = {}

    def version(self, model: str, version: str) -> VersionStats:
        key = (model, version)
        found = self._versions.get(key)
        if found is None:
            found = self._versions.setdefault(key, VersionStats())
        return found

    def snapshot(self, model: str, version: str) -> dict[str, Any]:
        found = self._versions.get((model, version))
        return (found if found is not None else VersionStats()).snapshot(model, version)

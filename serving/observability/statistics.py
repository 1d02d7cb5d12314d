"""Per-version inference statistics in the shape of Triton's statistics extension.

The numbers come from the measurements the Prometheus collectors record, in the same calls
(``serving.metrics``): the adapter's end-to-end duration and outcome (``observe_request``)
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


class VersionStats:
    """Cumulative counters of one model version. Edge fields (success, fail) are written on
    the event loop; stage fields also from predict threads, hence the lock."""

    __slots__ = (
        "_lock",
        "batches",
        "compute_count",
        "compute_ns",
        "execution_count",
        "fail_count",
        "fail_ns",
        "inference_count",
        "last_inference_ms",
        "queue_count",
        "queue_ns",
        "success_count",
        "success_ns",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.success_count = self.success_ns = 0
        self.fail_count = self.fail_ns = 0
        self.queue_count = self.queue_ns = 0
        self.compute_count = self.compute_ns = 0
        self.inference_count = self.execution_count = 0
        self.last_inference_ms = 0
        self.batches: dict[int, list[int]] = {}  # rows -> [executions, compute ns]

    # -- hot path ---------------------------------------------------------------------------
    def succeeded(self, seconds: float) -> None:
        with self._lock:
            self.success_count += 1
            self.success_ns += int(seconds * 1e9)
            self.last_inference_ms = int(time.time() * 1000)

    def failed(self, seconds: float) -> None:
        with self._lock:
            self.fail_count += 1
            self.fail_ns += int(seconds * 1e9)

    def queued(self, seconds: float) -> None:
        with self._lock:
            self.queue_count += 1
            self.queue_ns += int(seconds * 1e9)

    def executed(self, rows: int, seconds: float, requests: int) -> None:
        """One runtime call over ``rows`` rows serving ``requests`` requests: each request
        is charged the call's time, as Triton charges every request of a batch."""
        ns = int(seconds * 1e9)
        with self._lock:
            self.execution_count += 1
            self.inference_count += rows
            self.compute_count += requests
            self.compute_ns += ns * requests
            batch = self.batches.get(rows)
            if batch is None:
                self.batches[rows] = [1, ns]
            else:
                batch[0] += 1
                batch[1] += ns

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
                "last_inference": self.last_inference_ms,
                "inference_count": self.inference_count,
                "execution_count": executions,
                "inference_stats": {
                    "success": _duration(self.success_count, self.success_ns),
                    "fail": _duration(self.fail_count, self.fail_ns),
                    "queue": _duration(self.queue_count, self.queue_ns),
                    "compute_input": _duration(self.compute_count, 0),
                    "compute_infer": _duration(self.compute_count, self.compute_ns),
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


def _duration(count: int, ns: int) -> dict[str, int]:
    return {"count": count, "ns": ns}


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

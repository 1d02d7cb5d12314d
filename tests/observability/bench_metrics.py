"""Micro-benchmark: what recording one request's metrics costs on the hot path.

    .venv/bin/python -m tests.observability.bench_metrics            # single process
    PROMETHEUS_MULTIPROC_DIR=$(mktemp -d) .venv/bin/python -m tests.observability.bench_metrics

Times ``Metrics.observe_request`` (one counter inc and one histogram observe, children
cached) and the stage metrics the unbatched predictor records per request (queue depth
inc/dec, queue wait, compute and batch size observes), each against a no-op call of the
same shape, and prints nanoseconds per request. It counts this thread's CPU time, not wall
time, so other processes on a busy machine do not inflate it. prometheus-client picks its value class
(in-memory or mmap file) when it is imported, hence the environment variable.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable

from serving.observability.metrics import Metrics


def _noop(model: str, version: str, variant: str, protocol: str, outcome: str, seconds: float) -> None:
    return None


def per_call_ns(fn: Callable[[int], None], calls: int, repeats: int) -> float:
    """Median over ``repeats`` of the mean CPU ns per call of ``fn`` (called ``calls`` times)."""
    samples = []
    for _ in range(repeats):
        start = time.thread_time_ns()
        fn(calls)
        samples.append((time.thread_time_ns() - start) / calls)
    return statistics.median(samples)


def measure(calls: int = 20_000, repeats: int = 7) -> dict[str, float]:
    """ns per request: observe_request, the no-op, and the unbatched stage metrics."""
    metrics = Metrics()
    observe = metrics.observe_request
    stage = metrics.stage("iris-xgb", "2")

    def with_metrics(n: int) -> None:
        for i in range(n):
            observe("iris-xgb", "2", "stable", "rest", "2xx", 0.0004 + (i & 7) * 1e-5)

    def with_noop(n: int) -> None:
        for i in range(n):
            _noop("iris-xgb", "2", "stable", "rest", "2xx", 0.0004 + (i & 7) * 1e-5)

    def with_stage(n: int) -> None:
        for i in range(n):
            stage.queue_depth.inc()
            stage.queue_depth.dec()
            stage.served(0.00002 + (i & 7) * 1e-6, 1, 0.0003)  # Prometheus children and statistics

    with_metrics(1000)  # warm: label children created, code paths hot
    return {
        "observe_request_ns": per_call_ns(with_metrics, calls, repeats),
        "noop_ns": per_call_ns(with_noop, calls, repeats),
        "stage_metrics_ns": per_call_ns(with_stage, calls, repeats),
        "multiprocess": float(metrics.multiprocess_dir is not None),
    }


def main() -> None:
    result = measure()
    mode = "multiprocess (mmap)" if result["multiprocess"] else "single process"
    added = result["observe_request_ns"] - result["noop_ns"]
    print(f"mode: {mode}")
    print(
        f"observe_request: {result['observe_request_ns']:.0f} ns/call (no-op call: {result['noop_ns']:.0f} ns)"
    )
    print(f"  -> metrics add {added:.0f} ns per request")
    print(f"unbatched stage metrics: {result['stage_metrics_ns']:.0f} ns per request")


if __name__ == "__main__":
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR") == "auto":
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bench-metrics-")
    main()

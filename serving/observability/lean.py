"""Recording into prometheus-client's children without the library's per-call overhead.

Why: a request updates about a dozen series (its counter and duration, the in-flight gauge,
three stage histograms, a prediction counter). Through the library each ``Counter.inc`` and
``Histogram.observe`` checks the metric, takes a lock per value and walks the buckets in
Python: 0.4-1.1 µs a call, 8-10 µs of a one-row request's 100 µs (``loadtests/hotpath.py``
http-direct, 2026-12-06: 103-112 µs with the library's calls, 94-96 µs with them made no-ops).

How: the recorders here write the same value objects the library's children hold, directly: a
counter's or gauge's ``MutexValue._value``, a histogram's bucket (found by ``bisect``) and
its ``_sum``. The exposition reads those attributes (serving/observability/exposition.py), so
nothing is published or copied: ``/metrics`` and ``get_sample_value`` see each request at once.

Safety: a ``MutexValue``'s lock is what keeps two writers from losing an update; these writes
take none, so a recorder has one writing thread, the event loop (a request's counter and
duration, in-flight, predictions), or its caller holds a lock of its own around every write
(``StageMetrics``: predict threads write the stage series too).

Guard: the attributes are private (prometheus-client is bounded to one minor version in
pyproject.toml). ``lean_problem`` records the same observations through the library and
through these recorders on a probe registry at start and compares ``generate_latest``'s
bytes; when they differ, an attribute is gone, or values live in multiprocess files
(``--workers N``: mmap values, which these writes would bypass), ``wrap`` hands out the
library's own children (the same ``inc``/``dec``/``observe``), after one warning.
``Settings.metrics_exposition = "library"`` turns this path off as well.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from typing import Any

import prometheus_client.values as _values
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from serving.observability.startcheck import StartupCheck

log = logging.getLogger("serving.observability.lean")


class LeanCounter:
    """``inc`` of a Counter child (or a Gauge child, with ``dec``), on one writing thread."""

    __slots__ = ("_value",)

    def __init__(self, child: Any) -> None:
        self._value = child._value

    def inc(self, amount: float = 1.0) -> None:
        self._value._value += amount


class LeanGauge(LeanCounter):
    __slots__ = ()

    def dec(self, amount: float = 1.0) -> None:
        self._value._value -= amount


class LeanHistogram:
    """``observe`` of a Histogram child, on one writing thread: the first bucket whose bound
    is at or above the value (the library's ``amount <= bound``), and the sum."""

    __slots__ = ("_bounds", "_buckets", "_sum")

    def __init__(self, child: Any) -> None:
        self._bounds = list(child._upper_bounds)
        self._buckets = list(child._buckets)
        self._sum = child._sum

    def observe(self, amount: float) -> None:
        self._sum._value += amount
        if amount == amount:  # NaN falls in no bucket, as in the library (bisect would say 0)
            self._buckets[bisect_left(self._bounds, amount)]._value += 1.0


_KINDS: dict[type, type] = {Counter: LeanCounter, Gauge: LeanGauge, Histogram: LeanHistogram}


def _probe(lean: bool) -> bytes:
    """One registry's bytes after the same observations, through the library or the recorders."""
    r = CollectorRegistry()
    counter = Counter("probe_requests", "Requests.", ["model"], registry=r)
    gauge = Gauge("probe_inflight", "In flight.", ["model"], registry=r)
    latency = Histogram("probe_seconds", "Latency.", ["model"], buckets=(0.001, 0.01, 0.1, 1.0), registry=r)
    sizes = Histogram("probe_rows", "Rows.", buckets=(1, 2, 4, 8), registry=r)
    odd = Histogram("probe_odd", "Values on no bound.", buckets=(0.0, 1.0), registry=r)
    metrics = (counter, gauge, latency, sizes, odd)
    children = [counter.labels("m"), gauge.labels("m"), latency.labels("m"), sizes, odd]
    c, g, h, s, o = (wrap(child, metric, lean) for child, metric in zip(children, metrics, strict=True))
    for value in (0.0, 0.0005, 0.001, 0.0010001, 0.05, 1.0, 3.5, 0.25):
        h.observe(value)
        c.inc()
        g.inc(2)
        g.dec()
    for rows in (1, 2, 3, 8, 9, 64):
        s.observe(rows)
    c.inc(2.5)
    for value in (-1.0, -0.0, float("inf"), float("nan")):
        o.observe(value)
    # _created lines are the time each child was made: they differ between the two registries
    text = generate_latest(r).decode()
    return "\n".join(line for line in text.splitlines() if "_created" not in line).encode()


def _check() -> str | None:
    if _values.ValueClass is not _values.MutexValue:
        return "prometheus-client keeps values in multiprocess files (PROMETHEUS_MULTIPROC_DIR)"
    try:
        if _probe(lean=True) != _probe(lean=False):
            return "its output differs from the library's on the probe registry"
    except Exception as exc:  # an attribute renamed or reshaped by another prometheus-client
        return f"{type(exc).__name__}: {exc}"
    return None


def _warn(problem: str) -> None:
    if not problem.startswith("prometheus-client keeps values"):  # --workers N: expected, no warning
        log.warning("metrics: recording through prometheus-client's own calls (slower): %s", problem)


lean_problem = StartupCheck(lambda: _check(), _warn)
"""The start-up check's verdict, once per process (None: the recorders are good)."""


def wrap(child: Any, metric: Any, lean: bool) -> Any:
    """``child`` of ``metric`` (a Counter, Gauge or Histogram) as a lean recorder when ``lean``,
    else the child itself."""
    return _KINDS[type(metric)](child) if lean else child

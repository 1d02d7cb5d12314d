"""The last few minutes of each version's traffic, in memory, for the status page.

Prometheus keeps the history; this keeps just enough for a person looking at one server
(serving/protocol/rest/status.py): per (model, version), a ring of one-second slots holding
the request count, the error count and a small latency histogram. The adapter's end-to-end
duration and outcome reach it in the same call that feeds ``serving_requests_total``
(``Metrics.observe_request``), so the page and ``/metrics`` count the same requests.

Cost per request: one clock read, a compare, a ``bisect`` over the bucket bounds and three
integer additions into preallocated ``array`` storage (``loadtests/hotpath.py``, row
``timeline``). Everything else (rolling a slot over, merging slots, quantiles) happens once
per second or on a read. Writes and reads both run on the event loop (REST and gRPC share
it), so there is no lock.

Latency buckets are geometric, four per doubling from 20 µs to ~20 s: a quantile read from
them (linear inside the bucket, as PromQL's ``histogram_quantile`` does) is within ~10 % of
the true value. Figures are per process: with ``--workers N`` each worker has its own.
"""

from __future__ import annotations

import time
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

SLOTS = 300
"""Seconds of history kept (one slot per second): five minutes."""

BOUNDS: tuple[float, ...] = tuple(20e-6 * 2 ** (i / 4) for i in range(81))
"""Upper bounds of the latency buckets in seconds (the last bucket is everything above)."""

_BUCKETS = len(BOUNDS) + 1
_ZEROS = array("q", bytes(8 * _BUCKETS))
_monotonic = time.monotonic

HealthSource = Callable[[str], Mapping[str, float]]
"""A model's health figures for the status page, by name (for example ``drift:petal_width``
or ``prediction_shift``), from model monitoring; an empty mapping when it has none yet."""


class Series:
    """One (model, version)'s ring of one-second slots. ``ok`` and ``error`` are the hot path."""

    __slots__ = ("_head", "_index", "_row", "errors", "latency", "requests")

    def __init__(self) -> None:
        self.requests = array("q", bytes(8 * SLOTS))
        self.errors = array("q", bytes(8 * SLOTS))
        self.latency = array("q", bytes(8 * SLOTS * _BUCKETS))
        self._head = int(_monotonic())  # the absolute second the newest slot holds
        self._index = self._head % SLOTS
        self._row = self._index * _BUCKETS

    def ok(self, seconds: float) -> None:
        """A request answered successfully after ``seconds``."""
        now = int(_monotonic())
        if now != self._head:
            self._roll(now)
        self.requests[self._index] += 1
        self.latency[self._row + bisect_left(BOUNDS, seconds)] += 1

    def error(self, seconds: float) -> None:
        """A request that ended in an error after ``seconds``."""
        now = int(_monotonic())
        if now != self._head:
            self._roll(now)
        self.requests[self._index] += 1
        self.errors[self._index] += 1
        self.latency[self._row + bisect_left(BOUNDS, seconds)] += 1

    def _roll(self, now: int) -> None:
        """Clear the slots of the seconds between the newest one written and ``now``."""
        for second in range(max(self._head + 1, now - SLOTS + 1), now + 1):
            index = second % SLOTS
            self.requests[index] = 0
            self.errors[index] = 0
            row = index * _BUCKETS
            self.latency[row : row + _BUCKETS] = _ZEROS
        self._head = now
        self._index = now % SLOTS
        self._row = self._index * _BUCKETS

    def window(self, now: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(requests, errors, latency histograms) of the last ``SLOTS`` seconds, oldest first,
        the current (partial) second last; shapes (SLOTS,), (SLOTS,), (SLOTS, buckets)."""
        now = int(_monotonic()) if now is None else now
        if now != self._head:
            self._roll(now)
        # Slot order: the one after the newest is the oldest.
        order = np.roll(np.arange(SLOTS), -(self._index + 1))
        requests = np.frombuffer(self.requests, dtype=np.int64)[order]
        errors = np.frombuffer(self.errors, dtype=np.int64)[order]
        latency = np.frombuffer(self.latency, dtype=np.int64).reshape(SLOTS, _BUCKETS)[order]
        return requests, errors, latency


def quantile(histogram: np.ndarray, q: float) -> float | None:
    """The ``q`` quantile (seconds) of counts over ``BOUNDS`` (None when empty), linear
    inside the bucket the rank falls in."""
    total = int(histogram.sum())
    if total == 0:
        return None
    cumulative = np.cumsum(histogram)
    rank = q * total
    bucket = int(np.searchsorted(cumulative, rank, side="left"))
    if bucket >= len(BOUNDS):
        return BOUNDS[-1]  # above the last bound: the bound is all we know
    lower = BOUNDS[bucket - 1] if bucket > 0 else 0.0
    before = int(cumulative[bucket - 1]) if bucket > 0 else 0
    inside = int(histogram[bucket])
    return lower + (BOUNDS[bucket] - lower) * (rank - before) / inside


_UPPER = np.array(BOUNDS)
_LOWER = np.concatenate([[0.0], _UPPER[:-1]])


def quantiles(histograms: np.ndarray, q: float) -> list[float | None]:
    """``quantile`` of each row of ``histograms`` (shape (points, buckets)) in one pass."""
    cumulative = np.cumsum(histograms, axis=1)
    totals = cumulative[:, -1]
    ranks = q * totals
    buckets = (cumulative < ranks[:, None]).sum(axis=1)  # the first bucket reaching the rank
    inside = np.minimum(buckets, len(BOUNDS) - 1)
    rows = np.arange(len(histograms))
    before = np.where(buckets > 0, cumulative[rows, np.maximum(buckets - 1, 0)], 0)
    count = np.maximum(histograms[rows, inside], 1)
    values = _LOWER[inside] + (_UPPER[inside] - _LOWER[inside]) * (ranks - before) / count
    values = np.where(buckets >= len(BOUNDS), BOUNDS[-1], values)
    return [
        None if total == 0 else float(v) for v, total in zip(values.tolist(), totals.tolist(), strict=True)
    ]


MIN_POINTS = 15
"""Charts span at least this many points (30 s at the default step), else since the first request."""


def summarize(series: Series, step: int = 2, recent: int = 10, now: int | None = None) -> dict[str, Any]:
    """A version's figures for the page: ``recent`` full seconds (rates, error share, p50/p99)
    and points of ``step`` seconds each, oldest first (rate, error share, p50 and p99 in ms;
    None where no request ended), from the first point with a request (at least
    ``MIN_POINTS``) up to the last full second. The current second is left out: it is still
    filling."""
    requests, errors, latency = series.window(now)
    requests, errors, latency = requests[:-1], errors[:-1], latency[:-1]  # full seconds only
    usable = (len(requests) // step) * step
    req = requests[-usable:].reshape(-1, step).sum(axis=1)
    err = errors[-usable:].reshape(-1, step).sum(axis=1)
    hist = latency[-usable:].reshape(-1, step, _BUCKETS).sum(axis=1)
    busy = np.flatnonzero(req)
    start = min(int(busy[0]) if len(busy) else len(req), len(req) - MIN_POINTS)
    p50, p99 = quantiles(hist[start:], 0.50), quantiles(hist[start:], 0.99)
    points = [
        {
            "rate": round(float(r) / step, 3),
            "errors": round(float(e) / r, 4) if r else None,
            "p50_ms": _ms(a),
            "p99_ms": _ms(b),
        }
        for r, e, a, b in zip(req[start:].tolist(), err[start:].tolist(), p50, p99, strict=True)
    ]
    last_req, last_err = int(requests[-recent:].sum()), int(errors[-recent:].sum())
    last_hist = latency[-recent:].sum(axis=0)
    return {
        "rate": round(last_req / recent, 3),
        "requests": last_req,
        "errors": last_err,
        "error_share": round(last_err / last_req, 4) if last_req else None,
        "p50_ms": _ms(quantile(last_hist, 0.50)),
        "p99_ms": _ms(quantile(last_hist, 0.99)),
        "window_s": recent,
        "step_s": step,
        "points": points,
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 3)


class Timeline:
    """Every version's ``Series``, created on first use (keys are bounded: only served model
    names and their versions, plus ``none`` for requests that failed before routing). Shadow
    copies (serving/core/shadow.py) have series of their own, so a version's rate is the
    traffic it answered for callers."""

    def __init__(self) -> None:
        self._series: dict[tuple[str, str, bool], Series] = {}
        self.health: list[HealthSource] = []
        """Model-health sources (drift, prediction shift) the status page shows when set."""

    def series(self, model: str, version: str, shadow: bool = False) -> Series:
        key = (model, version, shadow)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = Series()
        return found

    def versions(self, model: str, shadow: bool = False) -> Iterator[tuple[str, Series]]:
        """``(version, series)`` of the model's answered requests (or of its shadow copies)."""
        for (name, version, copies), series in list(self._series.items()):
            if name == model and copies == shadow:
                yield version, series

    def model_health(self, model: str) -> dict[str, float]:
        """Every health source's figures for ``model``, merged (a failing source is skipped:
        the page must not break for a monitoring fault)."""
        figures: dict[str, float] = {}
        for source in self.health:
            try:
                figures.update(source(model))
            except Exception:  # a read for a page: a monitoring fault is never worth a 500
                continue
        return figures

"""Streaming input and prediction drift for versions with a reference profile.

The request path does as little as it can: ``DriftMonitor.observe`` draws the sample
(``monitoring_sample_rate``), checks the queue's bound and puts references to the request's
input matrix and output arrays on a queue (no copy: nothing mutates them after predict). One
background thread per process takes everything queued, concatenates it per version, bins it
with the profile's ``Binner`` (serving.observability.profile: one vectorised comparison for
all rows and features) and adds the counts to the version's sliding window. Every
``monitoring_refresh_seconds`` it publishes:

- ``serving_feature_drift`` / ``serving_prediction_drift``: the PSI of the window against the
  profile, what *this process* saw (NaN until the window holds ``monitoring_min_rows`` rows);
- ``serving_feature_bin_rows_total`` / ``serving_prediction_bin_rows_total``: rows per bin,
  summable over workers and replicas, from which the fleet's PSI is a recording rule
  (charts/serving/files/prometheus-rules.yaml), with the reference shares beside them;
- ``serving_feature_out_of_range_total`` and ``serving_feature_missing_total``.

Window: the last ``monitoring_window_seconds`` of sampled rows, kept in ten time slices (so it
covers between 90 % and 100 % of that length); requests enter it as they are sampled, every
row of a sampled request counts. Monitoring never changes an answer: ``observe`` cannot raise
into the request, and a fault in the background thread turns that version's monitoring off
with a log line.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from serving.inference import Array
from serving.observability.metrics import Metrics
from serving.observability.profile import Binner, Profile, output_columns

log = logging.getLogger("serving.observability.monitoring")

SLICES = 10
DRAIN_SECONDS = 0.25
"""How often the monitoring thread takes what is queued (at most: ``refresh_seconds`` if shorter)."""
MAX_OUTPUT_COLUMNS = 16
"""Output values monitored per version (a wide [N, K] output keeps its first 16)."""

_Item = tuple[int, Array, tuple[Array, ...]]
"""(the source's number, the input matrix, the output arrays): ints and arrays only, so the
cyclic garbage collector stops tracking queued items (dicts and dataclasses in a queue of
thousands made its collections cost more than the binning)."""


class _Source:
    """What a queued item's number stands for: one version's profile and output names."""

    def __init__(self, model: str, version: str, profile: Profile, outputs: tuple[str, ...]) -> None:
        self.model, self.version, self.profile, self.outputs = model, version, profile, outputs
        self.broken = False


class SlidingCounts:
    """Counts over the last ``seconds``, in ``SLICES`` time slices: adding to a slice first
    clears it if it still holds counts from a window ago."""

    def __init__(self, size: int, seconds: float) -> None:
        self.slice = seconds / SLICES
        self.counts = np.zeros((SLICES, size), dtype=np.int64)
        self.rows = np.zeros(SLICES, dtype=np.int64)
        self.stamps = np.full(SLICES, -(2**62), dtype=np.int64)

    def add(self, now: float, counts: Array, rows: int) -> None:
        n = int(now // self.slice)
        i = n % SLICES
        if self.stamps[i] != n:
            self.counts[i] = 0
            self.rows[i] = 0
            self.stamps[i] = n
        self.counts[i] += counts
        self.rows[i] += rows

    def total(self, now: float) -> tuple[Array, int]:
        live = self.stamps > int(now // self.slice) - SLICES
        return self.counts[live].sum(axis=0), int(self.rows[live].sum())


class VersionMonitor:
    """The window, binners and metric children of one (model, version, profile)."""

    def __init__(
        self, model: str, version: str, profile: Profile, metrics: Metrics, max_features: int, seconds: float
    ) -> None:
        self.profile = profile
        self.features = profile.features[:max_features]
        self.outputs = profile.outputs[:MAX_OUTPUT_COLUMNS]
        self.binner = Binner(self.features)
        self.out_binner = Binner(self.outputs)
        self.window = SlidingCounts(self.binner.size + self.out_binner.size, seconds)
        self.pending = np.zeros(self.binner.size + self.out_binner.size, dtype=np.int64)
        self.pending_oor = np.zeros(len(self.features), dtype=np.int64)
        self.pending_missing = np.zeros(len(self.features), dtype=np.int64)
        self.pending_rows = 0
        m = metrics
        self.drift = [m.feature_drift.labels(model, version, c.name) for c in self.features]
        self.out_drift = [m.prediction_drift.labels(model, version, c.name) for c in self.outputs]
        self.oor = [m.feature_out_of_range.labels(model, version, c.name) for c in self.features]
        self.missing = [m.feature_missing.labels(model, version, c.name) for c in self.features]
        self.rows = m.monitoring_rows.labels(model, version)
        # Every bin's counter exists from the start (at 0): the fleet rule's PSI sums over the
        # bins, and a bin that never got a row must still count as an empty bin.
        self.bins: list[Any] = []
        for family, share, columns in (
            (m.feature_bin_rows, m.feature_reference_share, self.features),
            (m.prediction_bin_rows, m.prediction_reference_share, self.outputs),
        ):
            for column in columns:
                for label, reference in zip(column.slot_labels(), column.shares, strict=True):
                    self.bins.append(family.labels(model, version, column.name, label))
                    share.labels(model, version, column.name, label).set(float(reference))
        for gauge in (*self.drift, *self.out_drift):
            gauge.set(float("nan"))
        self.version = version
        self.last: dict[str, float] = {}
        """The PSI figures last published, by name, for the status page (empty until enough rows)."""

    def add(self, now: float, x: Array, outputs: dict[str, Array]) -> None:
        counts, oor, missing = self.binner.count(x[:, : len(self.features)])
        if self.outputs:
            columns = output_columns(outputs)
            values = np.stack([columns[c.name] for c in self.outputs], axis=1)
            out_counts = self.out_binner.count(values)[0]
        else:
            out_counts = np.zeros(0, dtype=np.int64)
        both = np.concatenate([counts, out_counts])
        self.window.add(now, both, len(x))
        self.pending += both
        self.pending_oor += oor
        self.pending_missing += missing
        self.pending_rows += len(x)

    def publish(self, now: float, min_rows: int) -> None:
        total, rows = self.window.total(now)
        split = self.binner.size
        enough = rows >= min_rows
        for gauges, binner, counts in (
            (self.drift, self.binner, total[:split]),
            (self.out_drift, self.out_binner, total[split:]),
        ):
            if not gauges:
                continue
            figures = binner.psi(counts) if enough else np.full(len(gauges), np.nan)
            for gauge, value in zip(gauges, figures, strict=True):
                gauge.set(float(value))
            kind = "input" if binner is self.binner else "prediction"
            for column, value in zip(binner.columns, figures, strict=True):
                name = f"v{self.version} {kind} drift (PSI): {column.name}"
                if np.isnan(value):
                    self.last.pop(name, None)
                else:
                    self.last[name] = float(value)
        # Counters move by what arrived since the last publication (a few inc calls a second,
        # not one per request and bin).
        for i in np.flatnonzero(self.pending):
            self.bins[i].inc(int(self.pending[i]))
        for children, pending in ((self.oor, self.pending_oor), (self.missing, self.pending_missing)):
            for i in np.flatnonzero(pending):
                children[i].inc(int(pending[i]))
        if self.pending_rows:
            self.rows.inc(self.pending_rows)
        self.pending[:] = 0
        self.pending_oor[:] = 0
        self.pending_missing[:] = 0
        self.pending_rows = 0


class DriftMonitor:
    """Per-process model monitoring: ``observe`` on the request path, the rest on a thread."""

    def __init__(
        self,
        metrics: Metrics,
        sample_rate: float = 1.0,
        window_seconds: float = 300.0,
        min_rows: int = 100,
        max_features: int = 32,
        queue_size: int = 4096,
        refresh_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self._rate = sample_rate
        self._window = window_seconds
        self._min_rows = min_rows
        self._max_features = max_features
        self._bound = queue_size
        self._refresh = refresh_seconds
        self._clock = clock
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._versions: dict[tuple[str, str], VersionMonitor] = {}
        self._sources: list[_Source] = []
        self._numbers: dict[int, int] = {}  # id(profile) -> its number in _sources
        self._register_lock = threading.Lock()
        self._dropped: dict[str, Any] = {}
        self._stop = threading.Event()
        # Started by the first monitored request: a server (or a test) without profiles never
        # runs it.
        self._thread = threading.Thread(target=self._run, name="monitoring", daemon=True)

    @classmethod
    def from_settings(cls, settings: Any, metrics: Metrics) -> DriftMonitor:
        return cls(
            metrics,
            settings.monitoring_sample_rate,
            settings.monitoring_window_seconds,
            settings.monitoring_min_rows,
            settings.monitoring_max_features,
            settings.monitoring_queue_size,
            settings.monitoring_refresh_seconds,
        )

    # -- request path -----------------------------------------------------------------------
    def observe(
        self, model: str, version: str, profile: Profile, inputs: dict[str, Array], outputs: dict[str, Array]
    ) -> None:
        """Queue one answered request for monitoring (sampled; dropped and counted when the
        queue is full). Cheap and never raises into the request."""
        if self._rate < 1.0 and random.random() >= self._rate:
            return
        if self._queue.qsize() >= self._bound:
            child = self._dropped.get(model)
            if child is None:
                child = self._dropped[model] = self.metrics.monitoring_dropped.labels(model)
            child.inc()
            return
        x = inputs.get(profile.input)
        if x is None or x.ndim != 2:
            return
        number = self._numbers.get(id(profile))
        if number is None:
            number = self._register(model, version, profile, tuple(outputs))
        self._queue.put((number, x, tuple(outputs.values())))

    def _register(self, model: str, version: str, profile: Profile, outputs: tuple[str, ...]) -> int:
        """A number for (version, profile); the source keeps the profile alive, so its id is
        not reused while the number stands for it."""
        with self._register_lock:
            number = self._numbers.get(id(profile))
            if number is None:
                number = len(self._sources)
                self._sources.append(_Source(model, version, profile, outputs))
                self._numbers[id(profile)] = number
            if not self._thread.is_alive() and not self._stop.is_set():
                self._thread.start()
            return number

    def queued(self) -> int:
        """Requests waiting for the monitoring thread (approximate; benchmarks wait for 0)."""
        return self._queue.qsize()

    # -- background ---------------------------------------------------------------------------
    def _run(self) -> None:
        # Wake every DRAIN_SECONDS and take everything queued at once: one concatenation and
        # one binning for many requests, instead of numpy's fixed costs (and a GIL hand-over
        # that stalls the event loop) for every request.
        last = self._clock()
        while not self._stop.wait(min(DRAIN_SECONDS, self._refresh)):
            self._drain()
            now = self._clock()
            if now - last >= self._refresh:
                self.publish(now)
                last = now
        self._drain()
        self.publish(self._clock())

    def _drain(self) -> None:
        items: list[_Item] = []
        try:
            while True:
                items.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        if items:
            self._add(items)

    def _add(self, items: list[_Item]) -> None:
        groups: dict[int, list[_Item]] = {}
        for item in items:
            groups.setdefault(item[0], []).append(item)
        now = self._clock()
        for number, group in groups.items():
            source = self._sources[number]
            if source.broken:
                continue
            try:
                monitor = self._monitor(source.model, source.version, source.profile)
                x = np.concatenate([g[1] for g in group]) if len(group) > 1 else group[0][1]
                columns = zip(*(g[2] for g in group), strict=True)
                outputs = {
                    name: np.concatenate(arrays) if len(group) > 1 else arrays[0]
                    for name, arrays in zip(source.outputs, columns, strict=True)
                }
                monitor.add(now, x, outputs)
            except Exception:  # never more than one log line per version and profile
                log.exception(
                    "model %s version %s: monitoring turned off for it", source.model, source.version
                )
                source.broken = True

    def _monitor(self, model: str, version: str, profile: Profile) -> VersionMonitor:
        found = self._versions.get((model, version))
        if found is None or found.profile is not profile:  # a reload brings a new profile
            found = VersionMonitor(model, version, profile, self.metrics, self._max_features, self._window)
            self._versions[(model, version)] = found
        return found

    def publish(self, now: float | None = None) -> None:
        """Set the drift gauges from the windows and move the counters (the thread does it
        every ``refresh_seconds``)."""
        now = self._clock() if now is None else now
        for monitor in list(self._versions.values()):
            monitor.publish(now, self._min_rows)

    def health(self, model: str) -> dict[str, float]:
        """The model's last published drift figures (a ``HealthSource`` for the status page,
        serving.observability.timeline)."""
        figures: dict[str, float] = {}
        for (name, _), monitor in list(self._versions.items()):
            if name == model:
                figures.update(monitor.last)
        return figures

    def close(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

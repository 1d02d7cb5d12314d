"""A fast Prometheus text exposition (format 0.0.4) of one registry, byte for byte
``prometheus_client.generate_latest``'s.

Why: a server with hundreds of versions exports tens of thousands of samples, and
``generate_latest`` spends most of a scrape building a ``Sample`` tuple and a label dict per
sample, then sorting and escaping the same labels again at every scrape: 0.3 s and more for
300 versions, most of it holding the GIL the serving loop needs. This module walks the registry's
collectors itself and, for the metric types the server uses (``Counter``, ``Gauge``,
``Histogram``, labelled or not), reads each child's values directly. The line prefixes of a
child's samples (name and sorted, escaped labels, ``le`` included) are built once and kept,
and so are its lines while its values are the same objects, so a scrape formats (with the
library's ``floatToGoString``) only the series that moved, and joins. Any other collector
(another metric type, a custom collector, a gauge with ``set_function``, a subclass) goes
through ``generate_latest`` on its own, in its place, and ``_created`` samples go into their
own gauge family after each metric's samples, as ``generate_latest`` places them.

It reads private attributes of prometheus-client (``CollectorRegistry._collector_to_names``
and ``_lock``; a metric's ``_name``, ``_documentation``, ``_labelnames``, ``_labelvalues``,
``_metrics``, ``_lock``, ``_value``, ``_created``, ``_buckets``, ``_upper_bounds``, ``_sum``;
``MutexValue._value``; ``metrics._use_created``): the dependency is bounded to the minor
version this was checked on (pyproject.toml), and ``fast_path_problem`` compares it with
``generate_latest`` on a probe registry at start; ``Exposition`` falls back to the library,
with one warning, when the two differ or an attribute is gone.
``Settings.metrics_exposition = "library"`` forces the library. Figures:
docs/guides/performance.md.

Thread safety: the event loop and the predict threads keep recording during a scrape. A
labelled metric's children are copied under its lock, as the library does; each value is one
attribute read (see ``_Family``), a float some ``inc`` or ``set`` left, as ``get()`` returns.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from operator import is_
from typing import Any

import prometheus_client.metrics as _metrics_module
import prometheus_client.values as _values
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.openmetrics.exposition import escape_label_name, escape_metric_name
from prometheus_client.utils import floatToGoString

from serving.observability.startcheck import StartupCheck

log = logging.getLogger("serving.observability.exposition")

FAST = "fast"
LIBRARY = "library"

_fmt: Callable[[float], str] = floatToGoString  # the library's float text (Go's, +Inf, NaN)


def _escape_value(value: str) -> str:
    # generate_latest's label-value escaping (openmetrics._escape with ALLOWUTF8).
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _help(name: str, documentation: str, kind: str) -> str:
    doc = documentation.replace("\\", r"\\").replace("\n", r"\n")
    escaped = escape_metric_name(name)
    return f"# HELP {escaped} {doc}\n# TYPE {escaped} {kind}\n"


class _Single:
    """One collector on its own, for ``generate_latest`` (anything with ``collect`` will do)."""

    __slots__ = ("collector",)

    def __init__(self, collector: Any) -> None:
        self.collector = collector

    def collect(self) -> Iterable[Metric]:
        return self.collector.collect()  # type: ignore[no-any-return]


def _library(collector: Any) -> str:
    return generate_latest(_Single(collector)).decode("utf-8")


class _Series:
    """One child's cached text: its line prefixes, and the lines of the last scrape with the
    value objects they were formatted from."""

    __slots__ = ("child", "created", "created_raw", "prefixes", "raw", "text")

    def __init__(self, child: Any, prefixes: tuple[str, ...]) -> None:
        self.child = child  # a child removed and added again under its labels is a new object
        self.prefixes = prefixes
        self.raw: Any = None
        self.text = ""
        self.created_raw: Any = None
        self.created = ""


_LE: dict[tuple[float, ...], tuple[str, ...]] = {}  # bucket bounds -> their le texts (few)
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
}


class _Family:
    """The cached text pieces of one Counter, Gauge or Histogram and of its children.

    A child whose values are the same objects as at the last scrape (``is``, not ``==``: 0.0
    and -0.0 are equal but print differently) gives the same lines, so only the series that
    moved since the last scrape are formatted again; on a server with hundreds of versions
    most are idle between two scrapes.

    Values are read from ``MutexValue._value``: ``MutexValue.get()`` takes the value's lock
    to read that one attribute, a read as atomic under the GIL (the float some ``inc`` or
    ``set`` left) and ten times cheaper; once the lines are cached, these reads are most of a
    scrape."""

    __slots__ = (
        "children",
        "collector",
        "created_header",
        "header",
        "keys",
        "kind",
        "labelled",
        "le_at",
        "names",
        "order",
    )

    def __init__(self, collector: Any, kind: str) -> None:
        self.collector = collector
        self.kind = kind
        name = collector._name
        documentation = collector._documentation
        self.header = _help(name + "_total" if kind == "counter" else name, documentation, kind)
        self.created_header = _help(name + "_created", documentation, "gauge")
        self.labelled = bool(collector._labelnames) and not collector._labelvalues
        self.children: dict[tuple[str, ...], _Series] = {}
        # What every child shares, escaped once: the sample names, and the label names in the
        # order generate_latest writes them (sorted by name; a histogram's le among them).
        names: tuple[str, ...] = tuple(collector._labelnames)
        self.order = sorted(range(len(names)), key=names.__getitem__)
        self.keys = [escape_label_name(names[i]) for i in self.order]
        self.le_at = sum(1 for n in names if n < "le")
        suffixes = _SUFFIXES[kind]
        self.names = [escape_metric_name(name + suffix) for suffix in suffixes]

    def series(self, labelvalues: tuple[str, ...], child: Any) -> _Series:
        """A new child's entry: the line prefix of each of its samples, ``name{labels} ``."""
        parts = [
            f'{key}="{_escape_value(labelvalues[i])}"' for key, i in zip(self.keys, self.order, strict=True)
        ]
        labels = f"{{{','.join(parts)}}} " if parts else " "
        if self.kind != "histogram":
            return _Series(child, tuple(name + labels for name in self.names))
        head = "".join(f"{part}," for part in parts[: self.le_at])
        tail = "".join(f",{part}" for part in parts[self.le_at :])
        bucket, count, total, created = self.names
        bounds = tuple(child._upper_bounds)
        les = _LE.get(bounds)
        if les is None:
            les = _LE[bounds] = tuple(_fmt(b) for b in bounds)
        buckets = tuple(f'{bucket}{{{head}le="{le}"{tail}}} ' for le in les)
        return _Series(child, (*buckets, count + labels, total + labels, created + labels))

    def render(self, out: list[str], use_created: bool, counts: dict[float, str]) -> None:
        collector = self.collector
        if self.labelled:
            with collector._lock:
                children = collector._metrics.copy()
        else:
            children = {(): collector}
        if self.kind == "gauge":
            # set_function replaces the child's _child_samples: its value is the function's.
            for child in children.values():
                if "_child_samples" in child.__dict__:
                    out.append(_library(collector))
                    return
        cache = self.children
        if len(cache) > len(children):  # children were removed: forget them
            self.children = cache = {k: v for k, v in cache.items() if k in children}
        entries = []
        for labelvalues, child in children.items():
            entry = cache.get(labelvalues)
            if entry is None or entry.child is not child:
                entry = cache[labelvalues] = self.series(labelvalues, child)
            entries.append(entry)
        out.append(self.header)
        if self.kind == "gauge":
            self._gauges(entries, out)
            return
        if self.kind == "counter":
            self._counters(entries, out)
        else:
            self._histograms(entries, out, counts)
        if use_created and entries:
            out.append(self.created_header)
            out.extend([entry.created for entry in entries])

    @staticmethod
    def _gauges(entries: list[_Series], out: list[str]) -> None:
        append = out.append
        for entry in entries:
            value = entry.child._value._value
            if value is not entry.raw:
                entry.raw = value
                entry.text = f"{entry.prefixes[0]}{_fmt(value)}\n"
            append(entry.text)

    @staticmethod
    def _counters(entries: list[_Series], out: list[str]) -> None:
        append = out.append
        for entry in entries:
            child = entry.child
            value = child._value._value
            if value is not entry.raw:
                entry.raw = value
                entry.text = f"{entry.prefixes[0]}{_fmt(value)}\n"
            created = child._created  # reset() moves it
            if created is not entry.created_raw:
                entry.created_raw = created
                entry.created = f"{entry.prefixes[1]}{_fmt(created)}\n"
            append(entry.text)

    @staticmethod
    def _histograms(entries: list[_Series], out: list[str], counts: dict[float, str]) -> None:
        append = out.append
        for entry in entries:
            child = entry.child
            raw = [bucket._value for bucket in child._buckets]
            raw.append(child._sum._value)
            old = entry.raw
            if old is None or len(raw) != len(old) or not all(map(is_, raw, old)):
                entry.raw = raw
                prefixes = entry.prefixes
                lines = []
                acc = 0.0
                last = len(raw) - 1
                for i in range(last):
                    acc += raw[i]
                    # Cumulative counts repeat (0.0, 1.0, ... along a child's buckets): a
                    # memo. acc is never -0.0 (0.0 + -0.0 is 0.0), which shares 0.0's entry.
                    text = counts.get(acc)
                    if text is None:
                        text = counts[acc] = _fmt(acc)
                    lines.append(f"{prefixes[i]}{text}\n")
                lines.append(f"{prefixes[last]}{_fmt(acc)}\n")
                if child._upper_bounds[0] >= 0:
                    lines.append(f"{prefixes[last + 1]}{_fmt(raw[last])}\n")
                entry.text = "".join(lines)
            created = child._created
            if created is not entry.created_raw:
                entry.created_raw = created
                entry.created = f"{entry.prefixes[-1]}{_fmt(created)}\n"
            append(entry.text)


_MAX_COUNTS = 65536
_KINDS: dict[type, str] = {Counter: "counter", Gauge: "gauge", Histogram: "histogram"}


class FastExposition:
    """``generate_latest(registry)``'s bytes, faster (see the module's docstring). Not for a
    registry merged from ``PROMETHEUS_MULTIPROC_DIR`` files: those are custom collectors."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._families: dict[int, tuple[Any, _Family | None]] = {}
        self._lock = threading.Lock()  # two scrapes at once (/metrics and the metrics port)
        self._counts: dict[float, str] = {}  # histogram count -> its text

    def _family(self, collector: Any) -> _Family | None:
        found = self._families.get(id(collector))
        if found is None or found[0] is not collector:
            # Exact types only: a subclass may sample differently.
            kind = _KINDS.get(type(collector))
            found = self._families[id(collector)] = (collector, _Family(collector, kind) if kind else None)
        return found[1]

    def __call__(self) -> bytes:
        registry = self.registry
        with registry._lock:
            collectors = list(registry._collector_to_names)
        out: list[str] = []
        target_info = registry.get_target_info()
        if target_info:
            out.append(generate_latest(CollectorRegistry(target_info=target_info)).decode("utf-8"))
        use_created = bool(_metrics_module._use_created)
        with self._lock:
            if len(self._families) > len(collectors):  # collectors were unregistered
                alive = {id(c) for c in collectors}
                self._families = {k: v for k, v in self._families.items() if k in alive}
            for collector in collectors:
                family = self._family(collector)
                if family is None:
                    out.append(_library(collector))
                else:
                    family.render(out, use_created, self._counts)
            if len(self._counts) > _MAX_COUNTS:  # a bound on the memo: counts only grow
                self._counts.clear()
        return "".join(out).encode("utf-8")


class _Custom:
    """A custom collector in the probe: it must come out through the library, in its place."""

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily("probe_custom", 'custom "collector"', labels=["k"])
        family.add_metric(['a"b'], 1.5)
        return [family]


def _probe_registry() -> tuple[CollectorRegistry, Callable[[], None]]:
    """A registry with every shape the server's metrics take, and a change to apply between
    two scrapes (children added, one removed and added again, values moved)."""
    r = CollectorRegistry(target_info={"service": 'probe "x"'})
    odd = 'q"uote \\back\nline é'
    counter = Counter("probe_requests", "Requests \\ with\nnewline.", ["model", "version"], registry=r)
    plain = Counter("probe_plain", "Unlabelled counter.", registry=r)
    gauge = Gauge("probe_state", "States.", ["state", "model"], registry=r)
    level = Gauge("probe_level", "Unlabelled gauge.", registry=r)
    histogram = Histogram(
        "probe_seconds", "Latency.", ["version", "model"], buckets=(0.00005, 0.001, 0.1, 2.5, 1e7), registry=r
    )
    Histogram("probe_empty_seconds", "No children.", ["model"], registry=r)
    r.register(_Custom())
    negative = Histogram("probe_delta", "Negative buckets.", buckets=(-1.0, 0.0, 1.0), registry=r)
    Summary("probe_summary", "Another type.", ["model"], registry=r).labels("m").observe(0.25)
    Gauge("probe_function", "A callback.", registry=r).set_function(lambda: 2.5)
    counter.labels("m", "1").inc()
    counter.labels(odd, "2").inc(1e-7)
    plain.inc(123456789.0)
    gauge.labels("READY", odd).set(1)
    gauge.labels("FAILED", odd).set(float("nan"))
    level.set(-float("inf"))
    histogram.labels("1", odd).observe(0.0004)
    histogram.labels("2", "m").observe(3.0)
    negative.observe(-5.0)

    def change() -> None:
        counter.labels("m", "3").inc(2)
        counter.remove(odd, "2")
        counter.labels(odd, "2").inc(7)
        gauge.labels("READY", odd).set(0)
        level.set(-0.0)  # equal to 0.0, printed apart
        plain.reset()
        histogram.labels("3", "n").observe(1e9)
        histogram.remove("2", "m")

    return r, change


def _check() -> str | None:
    """None when the fast exposition gives the library's bytes on the probe, else why not."""
    if _values.ValueClass is not _values.MutexValue:
        # PROMETHEUS_MULTIPROC_DIR was set when prometheus-client was imported: values live in
        # mmap files (merged by the library at scrape), and probe metrics would land there too.
        return "prometheus-client keeps values in multiprocess files (PROMETHEUS_MULTIPROC_DIR)"
    try:
        registry, change = _probe_registry()
        fast = FastExposition(registry)
        for step in ("first scrape", "second scrape"):
            if fast() != generate_latest(registry):
                return f"its output differs from generate_latest's ({step} of the probe registry)"
            change()
    except Exception as exc:  # an attribute renamed or reshaped by another prometheus-client
        return f"{type(exc).__name__}: {exc}"
    return None


def _warn(problem: str) -> None:
    log.warning(
        "metrics exposition: the fast path is off, /metrics uses prometheus-client's "
        "generate_latest (slower with many versions): %s",
        problem,
    )


fast_path_problem = StartupCheck(lambda: _check(), _warn)
"""The start-up check's verdict, computed once per process (None: the fast path is good)."""


class Exposition:
    """Renders one registry for ``/metrics``: the fast exposition when ``mode`` is ``fast``
    and it passed the start-up check (``fast_path_problem``), else ``generate_latest``. A
    scrape the fast path fails on (it should not: the check covers every shape) is answered
    by the library, which then serves every later scrape, after one warning."""

    def __init__(self, registry: CollectorRegistry, mode: str = FAST) -> None:
        self.registry = registry
        self.fast: FastExposition | None = None
        if mode == FAST and fast_path_problem() is None:
            self.fast = FastExposition(registry)

    @property
    def mode(self) -> str:
        """``fast`` or ``library``: what renders the next scrape."""
        return FAST if self.fast is not None else LIBRARY

    def __call__(self) -> bytes:
        fast = self.fast
        if fast is not None:
            try:
                return fast()
            except Exception:
                self.fast = None
                log.warning(
                    "metrics exposition: the fast path failed, /metrics now uses generate_latest",
                    exc_info=True,
                )
        return bytes(generate_latest(self.registry))

"""The training reference profile of a model version, and the binning both drift paths share.

A profile is one JSON file beside the version's model file (``<model>/<version>/profile.json``),
written by ``serving profile`` (or ``serving export --profile``) from the rows the model was
trained on. Format (``format: serving.profile``, ``format_version: 1``)::

    {"format": "serving.profile", "format_version": 1, "rows": 569, "source": "train.parquet",
     "input": "input",
     "features": [{"name": "mean radius", "type": "numeric", "edges": [11.1, ...],
                   "shares": [0.1, ...], "missing_share": 0.0, "min": 6.98, "max": 28.1,
                   "mean": 14.1, "std": 3.5}, ...,
                  {"name": "grade", "type": "categorical", "categories": [0, 1, 2],
                   "shares": [0.5, 0.3, 0.2], "missing_share": 0.0}],
     "outputs": [{"name": "probability", "type": "numeric", ...}]}

Numeric columns have ``bins`` quantile bins: ``edges`` are the interior cut points (ascending,
duplicates merged), bin ``i`` holds ``edges[i-1] < x <= edges[i]``, ``shares[i]`` its share of
*all* rows; ``missing_share`` is the share of NaN, so the shares and ``missing_share`` sum to 1.
Integer-valued columns with at most ``MAX_CATEGORIES`` distinct values are categorical:
``categories`` and their frequencies (``shares``). Outputs are profiled the same way, one
column per output value (``probabilities[2]`` for column 2 of an [N, K] output).

``Binner`` turns rows into counts per slot: the bins, then (categorical) an ``unseen`` slot,
then a ``missing`` slot; it also counts values out of the training range (below ``min``, above
``max``, ±inf, an unseen category). ``psi`` compares counts with the reference. The server
(serving.observability.monitoring) and ``serving batch --drift-report`` call the same three
functions, so online and offline figures agree for the same rows. Pure numpy.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serving.inference import Array

FORMAT = "serving.profile"
FORMAT_VERSION = 1
PROFILE_FILE = "profile.json"
DEFAULT_BINS = 10
MAX_BINS = 20
MAX_CATEGORIES = 32
"""Integer-valued columns with at most this many distinct values are profiled as categories."""
PSI_FLOOR = 1e-4
"""Shares below this count as this in PSI (an empty bin would make the logarithm infinite);
the fleet recording rule clamps the same way."""
MISSING = "missing"
UNSEEN = "unseen"


class ProfileError(ValueError):
    """A profile that cannot be used: unreadable, of another format, or not this model's."""


@dataclass(frozen=True)
class Column:
    """One profiled feature or output value."""

    name: str
    kind: str
    """``numeric`` or ``categorical``."""
    cuts: Array
    """Numeric: the interior bin edges; categorical: the sorted category values."""
    shares: Array
    """Reference share of every slot (bins, ``unseen`` for categories, ``missing``); sums to 1."""
    low: float
    high: float

    @property
    def slots(self) -> int:
        return len(self.shares)

    def slot_labels(self) -> list[str]:
        """Metric label of every slot: the bin number, ``unseen``, ``missing``."""
        bins = len(self.cuts) + 1 if self.kind == "numeric" else len(self.cuts)
        labels = [str(i) for i in range(bins)]
        if self.kind == "categorical":
            labels.append(UNSEEN)
        return [*labels, MISSING]


@dataclass(frozen=True)
class Profile:
    """A validated profile: the features of the version's first input, and its output values."""

    input: str
    features: tuple[Column, ...]
    outputs: tuple[Column, ...]
    rows: int
    doc: dict[str, Any]


# -- building -------------------------------------------------------------------------------
def _column(name: str, values: Array, bins: int) -> dict[str, Any]:
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if n == 0:
        raise ProfileError("no rows to profile")
    missing = np.isnan(values)
    present = values[~missing]
    finite = present[np.isfinite(present)]
    doc: dict[str, Any] = {"name": name}
    distinct = np.unique(finite)
    integral = len(finite) == len(present) and np.all(distinct == np.round(distinct))
    if len(finite) and len(distinct) <= MAX_CATEGORIES and integral:
        counts = np.array([(present == c).sum() for c in distinct], dtype=np.float64)
        doc.update(type="categorical", categories=[_number(c) for c in distinct])
        doc["shares"] = [float(c / n) for c in counts]
    else:
        quantiles = np.quantile(finite, np.arange(1, bins) / bins) if len(finite) else np.array([])
        edges = np.unique(quantiles)
        doc.update(type="numeric", edges=[float(e) for e in edges])
        binned = np.bincount(_numeric_bins(present, edges), minlength=len(edges) + 1)
        doc["shares"] = [float(c / n) for c in binned]
    doc["missing_share"] = float(missing.sum() / n)
    if len(finite):
        doc.update(
            min=float(finite.min()),
            max=float(finite.max()),
            mean=float(finite.mean()),
            std=float(finite.std()),
        )
    return doc


def _number(value: float) -> int | float:
    return int(value) if abs(value) < 2**53 else float(value)


def _numeric_bins(values: Array, edges: Array) -> Array:
    """Bin ``i`` holds ``edges[i-1] < x <= edges[i]`` (NaN lands in bin 0; callers mask it)."""
    return np.searchsorted(edges, values, side="left").astype(np.intp)


def output_columns(outputs: dict[str, Array]) -> dict[str, Array]:
    """Output name -> values, one per output value (``name[k]`` for column k of [N, K]);
    non-numeric outputs are left out."""
    columns: dict[str, Array] = {}
    for name, array in outputs.items():
        if array.dtype.kind not in "biuf":
            continue
        if array.ndim == 1:
            columns[name] = array
        elif array.ndim == 2 and array.shape[1] == 1:
            columns[name] = array[:, 0]
        elif array.ndim == 2:
            for k in range(array.shape[1]):
                columns[f"{name}[{k}]"] = array[:, k]
    return columns


def build_profile(
    features: Array,
    feature_names: list[str],
    outputs: dict[str, Array],
    input_name: str,
    bins: int = DEFAULT_BINS,
    source: str = "",
) -> dict[str, Any]:
    """The profile document of a training table: ``features`` [N, F] (NaN = missing) and the
    model's outputs on those rows."""
    if not 2 <= bins <= MAX_BINS:
        raise ProfileError(f"bins must be between 2 and {MAX_BINS}")
    if features.ndim != 2 or features.shape[1] != len(feature_names):
        raise ProfileError(f"{features.shape[1]} feature columns but {len(feature_names)} names")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "rows": int(features.shape[0]),
        "source": source,
        "input": input_name,
        "bins": bins,
        "features": [_column(n, features[:, i], bins) for i, n in enumerate(feature_names)],
        "outputs": [_column(n, v, bins) for n, v in output_columns(outputs).items()],
    }


def write_profile(doc: dict[str, Any], path: Path) -> None:
    """Write atomically (a temporary file renamed into place)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)


# -- loading and validating -----------------------------------------------------------------
def _parse_column(doc: Any, where: str) -> Column:
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
        raise ProfileError(f"{where}: not an object with a name")
    name = doc["name"]
    kind = doc.get("type")
    try:
        shares = [float(s) for s in doc["shares"]]
        missing = float(doc.get("missing_share", 0.0))
        if kind == "numeric":
            cuts = np.array([float(e) for e in doc["edges"]], dtype=np.float64)
            if len(shares) != len(cuts) + 1:
                raise ProfileError(f"{where} '{name}': {len(shares)} shares for {len(cuts) + 1} bins")
            slots = [*shares, missing]
        elif kind == "categorical":
            cuts = np.array([float(c) for c in doc["categories"]], dtype=np.float64)
            if len(shares) != len(cuts) or not 0 < len(cuts) <= MAX_CATEGORIES:
                raise ProfileError(f"{where} '{name}': categories and shares differ in length")
            slots = [*shares, 0.0, missing]
        else:
            raise ProfileError(f"{where} '{name}': type must be numeric or categorical, not {kind!r}")
        low = float(doc.get("min", -math.inf))
        high = float(doc.get("max", math.inf))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ProfileError):
            raise
        raise ProfileError(f"{where} '{name}': {type(exc).__name__}: {exc}") from None
    if len(cuts) > MAX_CATEGORIES or not np.all(np.isfinite(cuts)) or np.any(np.diff(cuts) <= 0):
        raise ProfileError(f"{where} '{name}': edges must be finite, ascending and at most {MAX_CATEGORIES}")
    array = np.array(slots, dtype=np.float64)
    if np.any(~np.isfinite(array)) or np.any(array < 0) or abs(array.sum() - 1.0) > 1e-6:
        raise ProfileError(f"{where} '{name}': shares must be non-negative and sum to 1")
    return Column(name, kind, cuts, array, low, high)


def parse_profile(
    doc: Any, n_features: int, input_name: str, output_names: set[str] | None = None
) -> Profile:
    """Check a profile document against the version it sits beside: its format, one column per
    feature of the first input, output columns the model has. Raises ProfileError."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ProfileError(f"not a {FORMAT} document")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ProfileError(
            f"format_version {doc.get('format_version')!r} is not supported (this server reads {FORMAT_VERSION})"
        )
    if doc.get("input", input_name) != input_name:
        raise ProfileError(f"it profiles input '{doc.get('input')}', the model's input is '{input_name}'")
    features = doc.get("features")
    if not isinstance(features, list) or len(features) != n_features:
        count = len(features) if isinstance(features, list) else 0
        raise ProfileError(f"it profiles {count} features, the model takes {n_features}")
    outputs = doc.get("outputs", [])
    if not isinstance(outputs, list):
        raise ProfileError("outputs must be a list")
    parsed_outputs = tuple(_parse_column(o, "output") for o in outputs)
    if output_names is not None:
        unknown = sorted({o.name for o in parsed_outputs} - output_names)
        if unknown:
            raise ProfileError(f"the model has no output value {unknown[0]!r}")
    names = [f.get("name") if isinstance(f, dict) else None for f in features]
    if len(set(names)) != len(names):
        raise ProfileError("feature names repeat")
    return Profile(
        input_name,
        tuple(_parse_column(f, "feature") for f in features),
        parsed_outputs,
        int(doc.get("rows", 0)),
        doc,
    )


def read_profile(
    path: Path, n_features: int, input_name: str, output_names: set[str] | None = None
) -> Profile:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ProfileError(f"cannot read {path.name}: {type(exc).__name__}: {str(exc)[:200]}") from None
    return parse_profile(doc, n_features, input_name, output_names)


# -- binning and PSI ------------------------------------------------------------------------
class Binner:
    """Counts rows per slot for a fixed list of columns, vectorised over rows.

    ``count(values)`` for ``values`` [N, C] returns (slot counts, flat over the columns in
    order; out-of-range counts [C]; missing counts [C]). One ``searchsorted`` per column
    (O(N log bins): callers hand it many rows at once, the server a whole drain of its queue),
    one ``bincount`` for all; categorical columns get a second look for unseen values."""

    def __init__(self, columns: tuple[Column, ...]) -> None:
        self.columns = columns
        # categorical: midpoints, so each category value falls in its own bin
        self._cuts = [c.cuts if c.kind == "numeric" else (c.cuts[:-1] + c.cuts[1:]) / 2 for c in columns]
        sizes = np.array([c.slots for c in columns], dtype=np.intp)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)
        self.size = int(sizes.sum())
        self._missing_slot = self.offsets + sizes - 1
        self._low = np.array([c.low for c in columns])
        self._high = np.array([c.high for c in columns])
        self._categorical = [
            (i, c.cuts, int(self.offsets[i]) + len(c.cuts))
            for i, c in enumerate(columns)
            if c.kind != "numeric"
        ]
        self.reference = np.concatenate([c.shares for c in columns]) if columns else np.zeros(0)

    def count(self, values: Array) -> tuple[Array, Array, Array]:
        x = np.asarray(values, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        xt = np.ascontiguousarray(x.T)  # one column per row: every step below reads contiguously
        slots = np.empty(xt.shape, dtype=np.intp)
        for i, cuts in enumerate(self._cuts):  # bin i: cuts[i-1] < x <= cuts[i]
            slots[i] = np.searchsorted(cuts, xt[i], side="left")
        slots += self.offsets[:, None]
        missing = np.isnan(xt)
        out_of_range = (xt < self._low[:, None]) | (xt > self._high[:, None])
        for i, categories, unseen in self._categorical:
            unknown = ~np.isin(xt[i], categories) & ~missing[i]
            slots[i, unknown] = unseen
            out_of_range[i] = unknown
        np.copyto(slots, self._missing_slot[:, None], where=missing)
        counts = np.bincount(slots.ravel(), minlength=self.size)
        return counts, out_of_range.sum(axis=1), missing.sum(axis=1)

    def psi(self, counts: Array) -> Array:
        """PSI of every column: sum over slots of (a - e) ln(a / e), with a the observed and e
        the reference share, both floored at ``PSI_FLOOR``. NaN for a column with no rows."""
        result = np.full(len(self.columns), np.nan)
        for i, column in enumerate(self.columns):
            start = int(self.offsets[i])
            part = counts[start : start + column.slots].astype(np.float64)
            total = part.sum()
            if total <= 0:
                continue
            actual = np.maximum(part / total, PSI_FLOOR)
            expected = np.maximum(column.shares, PSI_FLOOR)
            result[i] = float(np.sum((actual - expected) * np.log(actual / expected)))
        return result


class DriftCounts:
    """Counts of a whole table, batch by batch (``serving batch --drift-report``), with the
    Binner the server uses: the PSI of every feature and output value, out-of-range and missing
    counts. ``add`` may be called from several threads."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.binner = Binner(profile.features)
        self.out_binner = Binner(profile.outputs)
        self.counts = np.zeros(self.binner.size, dtype=np.int64)
        self.out_counts = np.zeros(self.out_binner.size, dtype=np.int64)
        self.out_of_range = np.zeros(len(profile.features), dtype=np.int64)
        self.missing = np.zeros(len(profile.features), dtype=np.int64)
        self.rows = 0
        self._lock = threading.Lock()

    def add(self, features: Array, outputs: dict[str, Array]) -> None:
        counts, oor, missing = self.binner.count(features)
        out_counts = np.zeros(self.out_binner.size, dtype=np.int64)
        if self.profile.outputs:
            columns = output_columns(outputs)
            out_counts = self.out_binner.count(
                np.stack([columns[c.name] for c in self.profile.outputs], axis=1)
            )[0]
        with self._lock:
            self.counts += counts
            self.out_counts += out_counts
            self.out_of_range += oor
            self.missing += missing
            self.rows += len(features)

    def report(self) -> dict[str, Any]:
        psi = self.binner.psi(self.counts)
        out_psi = self.out_binner.psi(self.out_counts)
        return {
            "rows": self.rows,
            "features": {
                c.name: {
                    "psi": _finite(psi[i]),
                    "out_of_range": int(self.out_of_range[i]),
                    "missing": int(self.missing[i]),
                }
                for i, c in enumerate(self.profile.features)
            },
            "outputs": {c.name: {"psi": _finite(out_psi[i])} for i, c in enumerate(self.profile.outputs)},
        }


def drift_figures(profile: Profile, features: Array, outputs: dict[str, Array]) -> dict[str, Any]:
    """The drift report of a whole table at once (see DriftCounts)."""
    counts = DriftCounts(profile)
    counts.add(features, outputs)
    return counts.report()


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None

"""What each version predicts, as bounded counts per bucket: the input of the rollout's
prediction-shift test (serving/rollout/statistics.py).

Every output of a model's config.yaml is read once into an :class:`OutputRule`:

- **class**: an integer output of one column (``label``), or a float output of several
  columns (``probabilities [N, K]``, the predicted class is the arg-max; not counted when the
  model also has an integer class output, whose label the arg-max repeats). Bucket = the class
  number, ``0`` .. ``MAX_CLASSES - 1``; every other value (larger, negative) is ``other``.
- **score**: a float output of one column (a probability, a score, a regression target).
  Bucket = the upper edge of the fixed bin the value falls in (``le`` semantics: ``value <=
  edge``), ``+Inf`` past the last edge; NaN counts as ``+Inf``. Edges come from the model's
  ``prediction_buckets`` in config.yaml, else :data:`DEFAULT_SCORE_EDGES` (tenths of [0, 1],
  for probabilities). Edges are fixed per model, never derived from traffic, so every process
  and every version of a fleet counts into the same bins and the counts can be added up.
- BYTES outputs and outputs of more than two dimensions are not counted.

The series is ``serving_predictions_total{model, version, variant, output, bucket}``: a
counter per bucket (a histogram with non-cumulative buckets; Prometheus histograms fix their
edges per metric family, and these edges are per model). Cardinality per (version, variant,
output) is at most ``MAX_CLASSES + 1`` (class) or ``MAX_PREDICTION_EDGES + 1`` (serving.modelconfig) (score) series.

Cost: one ``np.argmax``/``np.searchsorted`` over the output and one counter add per distinct
bucket of the batch (one for a single-row request); children are cached, so no label tuple is
built per request. Measured in loadtests/hotpath.py (``predictions`` row).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_CLASSES = 64
"""Classes counted one by one; the rest share the bucket ``other`` (documented cap)."""
DEFAULT_SCORE_EDGES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
OTHER = "other"
INF = "+Inf"

_INTEGER = frozenset({"BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
_FLOAT = frozenset({"FP16", "FP32", "FP64"})


def edge_label(edge: float) -> str:
    """The ``bucket`` label of an edge, as Prometheus writes ``le`` (``0.1``, ``1.0``, ``+Inf``)."""
    return repr(float(edge))


@dataclass(frozen=True, slots=True)
class OutputRule:
    """How one output's values become bucket indices (``kind`` is ``class`` or ``score``)."""

    name: str
    kind: str
    edges: tuple[float, ...] = ()
    classes: int = 0
    """Classes known from the output's shape (``probabilities [N, K]``: K); 0 when unknown."""

    @property
    def labels(self) -> tuple[str, ...]:
        """Bucket label of each index."""
        if self.kind == "class":
            return (*(str(i) for i in range(MAX_CLASSES)), OTHER)
        return (*(edge_label(e) for e in self.edges), INF)

    def buckets(self, values: Any) -> Any:
        """The bucket index of every row (an int array)."""
        array = np.asarray(values)
        if self.kind == "class":
            if array.ndim == 2 and array.shape[1] > 1:
                classes = np.argmax(array, axis=1)
            else:
                classes = array.reshape(-1).astype(np.int64, copy=False)
            return np.where((classes >= 0) & (classes < MAX_CLASSES), classes, MAX_CLASSES)
        # side="left": value == edge goes to that edge's bucket (le); NaN sorts past the end.
        return np.searchsorted(np.asarray(self.edges, dtype=np.float64), array.reshape(-1), side="left")

    def bucket(self, value: Any) -> int:
        """The bucket index of a one-row answer, without array temporaries (the common case
        online: a numpy call costs more than the arithmetic)."""
        if self.kind == "class":
            if value.ndim == 2 and value.shape[1] > 1:
                return int(value[0].argmax())
            number = int(value.reshape(-1)[0])
            return number if 0 <= number < MAX_CLASSES else MAX_CLASSES
        score = float(value.reshape(-1)[0])
        if score != score:  # NaN
            return len(self.edges)
        return bisect.bisect_left(self.edges, score)


def output_rules(
    outputs: Sequence[tuple[str, str, Sequence[int]]], edges: Mapping[str, Sequence[float]]
) -> tuple[OutputRule, ...]:
    """Rules for a model's outputs ``(name, datatype, shape)``; ``edges`` from config.yaml."""
    rules = []
    columns_of = {name: shape[1] for name, _, shape in outputs if len(shape) == 2 and shape[1] > 1}
    for name, datatype, shape in outputs:
        columns = 1 if len(shape) == 1 else shape[1] if len(shape) == 2 else None
        if columns is None:
            continue
        if datatype in _INTEGER and columns == 1:
            rules.append(OutputRule(name, "class"))
        elif datatype in _FLOAT and columns == 1:
            rules.append(
                OutputRule(name, "score", tuple(float(e) for e in edges.get(name, DEFAULT_SCORE_EDGES)))
            )
        elif datatype in _FLOAT and (columns > 1 or columns == -1):
            rules.append(OutputRule(name, "class", (-1.0,)))  # marked: an arg-max, see below
    # A classifier that also answers its label (ONNX: label + probabilities) would count every
    # class twice: the arg-max repeats the label, so only the label is counted.
    if any(r.kind == "class" and not r.edges for r in rules):
        rules = [r for r in rules if not (r.kind == "class" and r.edges)]
    return tuple(
        OutputRule(r.name, r.kind, (), columns_of.get(r.name, 0)) if r.kind == "class" else r for r in rules
    )


class PredictionRecorder:
    """Counts one (model, version, variant)'s predictions into cached counter children."""

    __slots__ = ("_child", "_outputs")

    def __init__(self, rules: Sequence[OutputRule], child: Any) -> None:
        """``child(output, bucket_label)``: the counter child for one bucket."""
        self._child = child
        self._outputs: list[tuple[OutputRule, int, tuple[str, ...], list[Any]]] = [
            (rule, len(rule.labels), rule.labels, [None] * len(rule.labels)) for rule in rules
        ]
        # A counter born at its first count hides that count from increase(): the buckets that
        # are known in advance (a score's bins, the K classes of a [N, K] output) exist at 0 from
        # the first answer of this version and variant on, so a canary's first window is not
        # biased against its rarer classes. Integer labels (classes unknown) are made on use.
        for rule, _, labels, children in self._outputs:
            known = range(len(labels)) if rule.kind == "score" else range(min(rule.classes, MAX_CLASSES))
            for i in known:
                children[i] = child(rule.name, labels[i])

    def record(self, results: Mapping[str, Any]) -> None:
        for rule, size, labels, children in self._outputs:
            values = results.get(rule.name)
            if values is None:
                continue
            if values.shape[0] == 1:
                i = rule.bucket(values)
                found = children[i]
                if found is None:
                    found = children[i] = self._child(rule.name, labels[i])
                found.inc()
                continue
            counts = np.bincount(rule.buckets(values), minlength=size)
            for j in np.flatnonzero(counts).tolist():
                found = children[j]
                if found is None:
                    found = children[j] = self._child(rule.name, labels[j])
                found.inc(int(counts[j]))

"""Ground truth when it arrives: labels for earlier requests, joined by request id.

With ``SERVING_FEEDBACK_RETENTION=N`` the dataplane remembers, for the last N answered requests
(and no older than ``SERVING_FEEDBACK_MAX_AGE_SECONDS``), which version and variant answered and
what it predicted for the model's first classifier output (the predicted class per row, as the
prediction series buckets it) or, without one, its first score output (the value per row).
Requests of more than ``MAX_ROWS`` rows are not remembered. A request that came without an
``id`` gets one (returned in the response) so its answer can be labelled later.

``POST /v2/models/{m}/feedback`` (admin token) with ``{"labels": [{"id": "...", "label": 2}, ...]}``
(a list of labels for a request of several rows) joins each label to its request, all or none:
unknown or expired ids → 404, an id already labelled → 409, a label of the wrong type or length
→ 400, each counted in ``serving_feedback_rejected_total{model, reason}``; nothing is stored
twice. Accepted labels become ``serving_feedback_labels_total{model, version, variant, result}``
(``correct`` / ``wrong`` for classes, ``scored`` for scores) and
``serving_feedback_abs_error`` (scores), per version, which ``serving rollout --metric
accuracy`` compares. Past the retention the oldest request is dropped and counted
(``serving_feedback_evicted_total{model, reason}``, reason ``capacity`` or ``age``).

Memory: one entry per remembered request, about 270 bytes with a one-row answer plus its id (measured in
tests/core/test_feedback.py); the retention bounds it.
"""

from __future__ import annotations

import itertools
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.errors import Conflict, InvalidInput, ModelNotFound
from serving.observability.metrics import Metrics
from serving.observability.predictions import OutputRule

MAX_ROWS = 64
"""Requests with more rows are not remembered (their answers would dominate the memory bound)."""
MAX_LABELS = 10_000
"""Labels one feedback request may carry."""


@dataclass(slots=True)
class _Answer:
    model: str
    version: str
    variant: str
    kind: str
    values: Any
    """The predicted class or value: a Python number for one row, an array for several."""
    at: float
    labelled: bool = False


_PREFIX = uuid.uuid4().hex[:16]
_COUNTER = itertools.count()


def new_request_id() -> str:
    """A unique id for a request that came without one: a random per-process prefix and a
    counter (a fresh uuid4 per request costs several microseconds)."""
    return f"{_PREFIX}{next(_COUNTER):016x}"


class FeedbackStore:
    """Bounded memory of recent answers, and the join of labels to them."""

    def __init__(
        self, metrics: Metrics, capacity: int, max_age_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.metrics = metrics
        self.capacity = capacity
        self.max_age_s = max_age_s
        self.clock = clock
        self._answers: OrderedDict[tuple[str, str], _Answer] = OrderedDict()
        self._series: set[tuple[str, str, str]] = set()

    def __len__(self) -> int:
        return len(self._answers)

    # -- request path ------------------------------------------------------------------------
    def remember(
        self,
        request_id: str,
        model: str,
        version: str,
        variant: str,
        rule: OutputRule,
        results: Mapping[str, Any],
    ) -> None:
        """Keep one answer (call after predict; ``rule`` the model's first class or score output)."""
        values = results.get(rule.name)
        if values is None or values.shape[0] > MAX_ROWS:
            return
        if values.shape[0] == 1:  # the common case online: no array temporaries
            kept: Any = rule.bucket(values) if rule.kind == "class" else float(values.reshape(-1)[0])
        elif rule.kind == "class":
            kept = rule.buckets(values)
        else:
            kept = np.asarray(values, dtype=np.float64).reshape(-1)
        series = (model, version, variant)
        if series not in self._series:
            # Counters born at their first count hide that count from increase(): the labels'
            # series exist at 0 from the version's first remembered answer on.
            self._series.add(series)
            for result in ("correct", "wrong") if rule.kind == "class" else ("scored",):
                self.metrics.feedback_labels.labels(*series, result)
        now = self.clock()
        key = (model, request_id)
        self._answers.pop(key, None)  # a reused id: the latest answer is the one to label
        self._answers[key] = _Answer(model, version, variant, rule.kind, kept, now)
        while len(self._answers) > self.capacity:
            _, old = self._answers.popitem(last=False)
            self.metrics.feedback_evicted.labels(old.model, "capacity").inc()
        self._expire(now)

    def _expire(self, now: float) -> None:
        while self._answers:
            key, oldest = next(iter(self._answers.items()))
            if now - oldest.at <= self.max_age_s:
                return
            del self._answers[key]
            self.metrics.feedback_evicted.labels(oldest.model, "age").inc()

    # -- feedback ----------------------------------------------------------------------------
    def submit(self, model: str, doc: Any) -> dict[str, Any]:
        """Join ``{"labels": [{"id", "label"}, ...]}`` to remembered answers, all or none."""
        items = doc.get("labels") if isinstance(doc, dict) else None
        if not isinstance(items, list) or not items:
            self._reject(model, "invalid")
            raise InvalidInput('send {"labels": [{"id": "<request id>", "label": <class or value>}, ...]}')
        if len(items) > MAX_LABELS:
            self._reject(model, "invalid", len(items))
            raise InvalidInput(f"{len(items)} labels in one request; at most {MAX_LABELS}")
        self._expire(self.clock())
        joined: list[tuple[_Answer, Any]] = []
        seen: set[str] = set()
        unknown: list[str] = []
        for i, item in enumerate(items):
            request_id = item.get("id") if isinstance(item, dict) else None
            if not isinstance(request_id, str) or not request_id or "label" not in item:
                self._reject(model, "invalid", len(items))
                raise InvalidInput(f"labels[{i}]: an object with a string 'id' and a 'label'")
            answer = self._answers.get((model, request_id))
            if answer is None:
                unknown.append(request_id)
                continue
            if answer.labelled or request_id in seen:
                self._reject(model, "duplicate", len(items))
                raise Conflict(
                    f"labels[{i}]: request '{request_id[:64]}' already has its label; nothing stored"
                )
            seen.add(request_id)
            try:
                joined.append((answer, _label(item["label"], answer, i)))
            except InvalidInput:
                self._reject(model, "invalid", len(items))
                raise
        if unknown:
            self._reject(model, "unknown_id", len(items))
            shown = ", ".join(f"'{u[:64]}'" for u in unknown[:5])
            raise ModelNotFound(
                f"{len(unknown)} of {len(items)} ids unknown to model '{model}' (never answered here, "
                f"or older than the retention): {shown}; nothing stored"
            )
        for answer, label in joined:
            answer.labelled = True
            self._score(answer, label)
        return {"model": model, "accepted": len(joined)}

    def _reject(self, model: str, reason: str, count: int = 1) -> None:
        self.metrics.feedback_rejected.labels(model, reason).inc(count)

    def _score(self, answer: _Answer, label: Any) -> None:
        m, labels = self.metrics, (answer.model, answer.version, answer.variant)
        values = np.atleast_1d(answer.values)
        if answer.kind == "class":
            correct = int(np.count_nonzero(values == label))
            wrong = int(values.size) - correct
            if correct:
                m.feedback_labels.labels(*labels, "correct").inc(correct)
            if wrong:
                m.feedback_labels.labels(*labels, "wrong").inc(wrong)
            return
        m.feedback_labels.labels(*labels, "scored").inc(int(values.size))
        histogram = m.feedback_abs_error.labels(*labels)
        for error in np.abs(values - label).tolist():
            histogram.observe(error)


def _label(value: Any, answer: _Answer, index: int) -> Any:
    """The label as an array of the answer's length (a scalar for one row); 400 otherwise."""
    rows = int(np.size(answer.values))
    listed = value if isinstance(value, list) else [value]
    if len(listed) != rows:
        raise InvalidInput(f"labels[{index}]: {len(listed)} labels for a request of {rows} rows")
    if answer.kind == "class":
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in listed):
            raise InvalidInput(f"labels[{index}]: class labels are integers")
        return np.asarray(listed, dtype=np.int64)
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in listed):
        raise InvalidInput(f"labels[{index}]: labels of a score output are finite numbers")
    return np.asarray(listed, dtype=np.float64)

"""The canary verdict: promote, hold or rollback, from request counts, latency and predictions.

Pure code: no I/O. The inputs are what Prometheus gives over one window (requests, server
errors, latency buckets and predicted-class/score counts per side); the output names the
verdict, the numbers and the reason. The tests themselves are in serving.rollout.statistics.

Error ratio: small volumes make point estimates lie (1 error in 10 requests is 10 %), so
the comparison is on the Agresti-Caffo interval of the difference ``canary - stable``
(add one success and one failure to each side, then a Wald interval; good coverage down to
a handful of requests). The canary is *worse* when the whole one-sided interval lies above
``max_error_increase``; it is *safe* when the whole interval lies below it; in between the
data cannot tell yet and the verdict is hold.

Latency (tail exceedance): the limit is the stable p99 times ``1 + latency_tolerance`` plus
``latency_slack_s`` (so sub-millisecond noise does not count), rounded up to the next latency
bucket edge. The share of canary requests slower than that edge is compared with the stable's
share by the same interval as errors, against ``max_tail_increase``: a proportion, not one
request's time, so it holds at low volume where a p99 point estimate does not.

Predictions: per output, a G-test on the bucket counts and the total-variation distance
(statistics.shift_test); both must say "shifted" for a rollback.

Many looks: ``look`` (the k-th analysis of one ``auto`` run) makes every rollback test use
``statistics.spent_alpha``, so a whole rollout keeps its false-rollback rate under
``1 - confidence``. Promotion is not spent: every step must pass on its own.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from serving.rollout.statistics import ShiftTest, proportion_diff, shift_test, spent_alpha, z_for


class Verdict(StrEnum):
    PROMOTE = "promote"
    HOLD = "hold"
    ROLLBACK = "rollback"

    @property
    def exit_code(self) -> int:
        """0 promote, 1 rollback, 2 hold (3 is reserved for errors by the CLI)."""
        return {Verdict.PROMOTE: 0, Verdict.ROLLBACK: 1, Verdict.HOLD: 2}[self]


EXIT_ERROR = 3


@dataclass(frozen=True)
class Sample:
    """One side (stable or canary) over the analysis window."""

    requests: float
    errors: float
    p99_s: float | None = None
    """p99 latency in seconds; None when there were no observations."""
    latency_buckets: dict[float, float] | None = None
    """Cumulative request counts per latency bucket edge (``le``, seconds; ``inf`` = all)."""
    predictions: dict[str, dict[str, float]] | None = None
    """Output -> bucket -> predictions counted; None when the series is absent."""
    labelled: float = 0.0
    """Answers (rows) with ground truth in the window (serving_feedback_labels_total)."""
    wrong: float = 0.0
    """Of those, answered with another class than the label."""

    @property
    def error_ratio(self) -> float:
        return self.errors / self.requests if self.requests > 0 else 0.0


@dataclass(frozen=True)
class Thresholds:
    min_requests: int = 100
    """Canary requests needed in the window before any verdict but hold."""
    max_error_increase: float = 0.02
    """Error ratio the canary may add over stable (absolute, 0.02 = 2 points)."""
    confidence: float = 0.95
    """One-sided confidence of the error-ratio comparison."""
    latency_tolerance: float = 0.5
    """Relative p99 increase allowed (0.5 = canary p99 up to 1.5x stable)."""
    latency_slack_s: float = 0.005
    """Absolute p99 increase always allowed, in seconds."""
    max_p99_s: float | None = None
    """Optional absolute ceiling on the canary p99."""
    max_tail_increase: float = 0.05
    """Share of requests above the latency limit the canary may add over stable (0.05 = 5 points)."""
    prediction_shift: bool = True
    """Judge the predictions (classes or score bins) too."""
    max_prediction_shift: float = 0.1
    """Total-variation distance between the two prediction distributions that is tolerated."""
    accuracy: bool = False
    """Judge accuracy against ground truth too (``--metric accuracy``)."""
    max_accuracy_drop: float = 0.02
    """Share of wrong answers the canary may add over stable (0.02 = 2 points of accuracy)."""
    min_labels: int = 100
    """Labelled canary answers needed before the accuracy check says pass."""
    max_disagreement: float = 0.1
    """Shadow gate: share of mirrored rows whose predicted class may differ from the stable's."""
    max_shadow_diff: float = 0.1
    """Shadow gate without class outputs: tolerated 90th percentile of the largest absolute
    output difference per mirrored request."""


@dataclass(frozen=True)
class ErrorComparison:
    canary_ratio: float
    stable_ratio: float
    diff_low: float
    diff_high: float
    outcome: str  # "worse", "safe", "inconclusive"


def compare_errors(
    stable: Sample, canary: Sample, thresholds: Thresholds, look: int | None = None
) -> ErrorComparison:
    """Agresti-Caffo one-sided bounds on ``p_canary - p_stable``: the lower bound at the
    look's spent level (rollback), the upper bound at ``thresholds.confidence`` (safe)."""
    alpha = 1.0 - thresholds.confidence
    low, high = proportion_diff(
        canary.errors,
        canary.requests,
        stable.errors,
        stable.requests,
        z_for(spent_alpha(alpha, look)),
        z_for(alpha),
    )
    tol = thresholds.max_error_increase
    if low > tol:
        outcome = "worse"
    elif high <= tol:
        outcome = "safe"
    else:
        outcome = "inconclusive"
    return ErrorComparison(canary.error_ratio, stable.error_ratio, low, high, outcome)


@dataclass(frozen=True)
class TailComparison:
    """Share of requests slower than ``edge_s`` (the limit rounded up to a bucket edge)."""

    edge_s: float
    canary_share: float
    stable_share: float
    diff_low: float
    diff_high: float
    outcome: str  # "worse", "safe", "inconclusive"


def _above(sample: Sample, edge: float) -> tuple[float, float] | None:
    """(requests slower than ``edge``, requests observed) from cumulative buckets."""
    buckets = sample.latency_buckets
    if not buckets or math.inf not in buckets:
        return None
    total = buckets[math.inf]
    return max(0.0, total - buckets.get(edge, total)), total


def compare_tail(
    stable: Sample, canary: Sample, limit: float, thresholds: Thresholds, look: int | None = None
) -> TailComparison | None:
    """The canary's share of requests above the first bucket edge at or past ``limit``
    against the stable's; None without buckets on either side."""
    if not canary.latency_buckets or not stable.latency_buckets:
        return None
    edges = sorted(e for e in canary.latency_buckets if e >= limit)
    if not edges:
        return None
    edge = edges[0]
    c, s = _above(canary, edge), _above(stable, edge)
    if c is None or s is None or c[1] <= 0:
        return None
    alpha = 1.0 - thresholds.confidence
    low, high = proportion_diff(c[0], c[1], s[0], s[1], z_for(spent_alpha(alpha, look)), z_for(alpha))
    tol = thresholds.max_tail_increase
    outcome = "worse" if low > tol else "safe" if high <= tol else "inconclusive"
    stable_share = s[0] / s[1] if s[1] > 0 else 0.0
    return TailComparison(edge, c[0] / c[1], stable_share, low, high, outcome)


@dataclass(frozen=True)
class Analysis:
    verdict: Verdict
    reason: str
    stable: Sample
    canary: Sample
    errors: ErrorComparison | None
    p99_limit_s: float | None
    checks: dict[str, str] = field(default_factory=dict)
    """check name -> "pass" | "fail" | "wait", for the table and for pipelines."""
    tail: TailComparison | None = None
    prediction_shift: list[ShiftTest] = field(default_factory=list)
    look: int | None = None
    """The look of an ``auto`` run this verdict was (None: one ``analyze``)."""
    alpha: float | None = None
    """The level each rollback test of this look used (after spending)."""
    accuracy: ErrorComparison | None = None
    """Wrong-answer ratios against ground truth (``--metric accuracy``), as for errors."""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["verdict"] = self.verdict.value
        return out


def _judge(
    checks: dict[str, str], fails: list[str], waits: list[str], name: str, outcome: str, text: str
) -> None:
    """One interval comparison's outcome as a check: worse fails, inconclusive waits (both with
    the comparison's text), anything else passes."""
    if outcome == "worse":
        checks[name] = "fail"
        fails.append(text)
    elif outcome == "inconclusive":
        checks[name] = "wait"
        waits.append(text)
    else:
        checks[name] = "pass"


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.1f} ms"


def decide(
    stable: Sample, canary: Sample, thresholds: Thresholds | None = None, look: int | None = None
) -> Analysis:
    """The verdict for one window. Rollback wins over hold, hold over promote."""
    t = thresholds or Thresholds()
    checks: dict[str, str] = {}
    fails: list[str] = []
    waits: list[str] = []
    alpha = spent_alpha(1.0 - t.confidence, look)

    if canary.requests < t.min_requests:
        checks["volume"] = "wait"
        waits.append(f"canary served {canary.requests:.0f} requests, {t.min_requests} needed")
    else:
        checks["volume"] = "pass"

    errors = compare_errors(stable, canary, t, look)
    detail = (
        f"error ratio canary {errors.canary_ratio:.2%} vs stable {errors.stable_ratio:.2%}, "
        f"difference in [{errors.diff_low:+.2%}, {errors.diff_high:+.2%}], allowed +{t.max_error_increase:.2%}"
    )
    _judge(checks, fails, waits, "errors", errors.outcome, detail)

    limit, tail = _latency(stable, canary, t, look, checks, fails, waits)

    accuracy: ErrorComparison | None = None
    if t.accuracy:
        accuracy = _accuracy(stable, canary, t, look, checks, fails, waits)

    shifts: list[ShiftTest] = []
    if t.prediction_shift:
        shifts = _predictions(stable, canary, t, alpha, checks, fails, waits)

    # A clearly bad canary is rolled back even before the volume target: the intervals
    # already account for how few requests there were. Latency needs the volume first
    # (a handful of slow first requests: connection set-up, lazy imports).
    if (
        checks["errors"] == "fail"
        or checks.get("predictions") == "fail"
        or checks.get("accuracy") == "fail"
        or (checks["latency"] == "fail" and checks["volume"] == "pass")
    ):
        verdict, reason = Verdict.ROLLBACK, "; ".join(fails)
    elif waits or fails:
        verdict, reason = Verdict.HOLD, "; ".join(waits + fails)
    else:
        verdict = Verdict.PROMOTE
        reason = f"{canary.requests:.0f} canary requests; {detail}; p99 canary {_ms(canary.p99_s)}"
        if tail is not None:
            reason += f", {tail.canary_share:.2%} above {_ms(tail.edge_s)}"
        if shifts:
            reason += "; predictions " + ", ".join(f"{s.output} TV {s.total_variation:.3f}" for s in shifts)
    return Analysis(
        verdict, reason, stable, canary, errors, limit, checks, tail, shifts, look, alpha, accuracy
    )


def _latency(
    stable: Sample,
    canary: Sample,
    t: Thresholds,
    look: int | None,
    checks: dict[str, str],
    fails: list[str],
    waits: list[str],
) -> tuple[float | None, TailComparison | None]:
    limit: float | None = None
    if stable.p99_s is not None:
        limit = stable.p99_s * (1 + t.latency_tolerance) + t.latency_slack_s
    tail = compare_tail(stable, canary, limit, t, look) if limit is not None else None
    if t.max_p99_s is not None and canary.p99_s is not None and canary.p99_s > t.max_p99_s:
        checks["latency"] = "fail"
        fails.append(f"p99 canary {_ms(canary.p99_s)} > ceiling {_ms(t.max_p99_s)}")
    elif tail is not None:
        text = (
            f"{tail.canary_share:.2%} of canary requests slower than {_ms(tail.edge_s)} "
            f"(stable {tail.stable_share:.2%}; difference in [{tail.diff_low:+.2%}, {tail.diff_high:+.2%}], "
            f"allowed +{t.max_tail_increase:.0%}; p99 canary {_ms(canary.p99_s)}, stable {_ms(stable.p99_s)})"
        )
        _judge(checks, fails, waits, "latency", tail.outcome, text)
    elif limit is not None and canary.p99_s is not None and not canary.latency_buckets:
        # Buckets missing (a caller that gives only p99s): the point comparison.
        if canary.p99_s > limit:
            checks["latency"] = "fail"
            fails.append(f"p99 canary {_ms(canary.p99_s)} > limit {_ms(limit)} (stable {_ms(stable.p99_s)})")
        else:
            checks["latency"] = "pass"
    elif limit is not None and canary.latency_buckets and not any(e >= limit for e in canary.latency_buckets):
        checks["latency"] = "pass"  # the limit is past the last finite edge: nothing is slower
    else:
        checks["latency"] = "wait"
        waits.append(
            f"latency not measurable yet (canary p99 {_ms(canary.p99_s)}, stable {_ms(stable.p99_s)})"
        )
    return limit, tail


def _accuracy(
    stable: Sample,
    canary: Sample,
    t: Thresholds,
    look: int | None,
    checks: dict[str, str],
    fails: list[str],
    waits: list[str],
) -> ErrorComparison | None:
    if canary.labelled < t.min_labels or stable.labelled <= 0:
        checks["accuracy"] = "wait"
        waits.append(
            f"ground truth for {canary.labelled:.0f} canary and {stable.labelled:.0f} stable answers "
            f"(serving_feedback_labels_total), {t.min_labels} canary needed"
        )
        return None
    alpha = 1.0 - t.confidence
    low, high = proportion_diff(
        canary.wrong,
        canary.labelled,
        stable.wrong,
        stable.labelled,
        z_for(spent_alpha(alpha, look)),
        z_for(alpha),
    )
    outcome = (
        "worse" if low > t.max_accuracy_drop else "safe" if high <= t.max_accuracy_drop else "inconclusive"
    )
    found = ErrorComparison(
        canary.wrong / canary.labelled, stable.wrong / stable.labelled, low, high, outcome
    )
    text = (
        f"accuracy canary {1 - found.canary_ratio:.2%} vs stable {1 - found.stable_ratio:.2%} "
        f"({canary.labelled:.0f} / {stable.labelled:.0f} labelled), wrong-answer difference in "
        f"[{low:+.2%}, {high:+.2%}], allowed +{t.max_accuracy_drop:.2%}"
    )
    _judge(checks, fails, waits, "accuracy", outcome, text)
    return found


def _predictions(
    stable: Sample,
    canary: Sample,
    t: Thresholds,
    alpha: float,
    checks: dict[str, str],
    fails: list[str],
    waits: list[str],
) -> list[ShiftTest]:
    if not canary.predictions or not stable.predictions:
        checks["predictions"] = "wait"
        waits.append(
            "no prediction series (serving_predictions_total) for "
            + (
                "either side"
                if not canary.predictions and not stable.predictions
                else "the canary"
                if not canary.predictions
                else "the stable version"
            )
            + ": a server without them, or a scrape gap (--no-prediction-shift judges without)"
        )
        return []
    outputs = sorted(set(canary.predictions) | set(stable.predictions))
    each = alpha / len(outputs)  # Bonferroni over outputs
    shifts = [
        shift_test(
            o,
            stable.predictions.get(o, {}),
            canary.predictions.get(o, {}),
            each,
            t.max_prediction_shift,
            t.min_requests,
        )
        for o in outputs
    ]
    for s in shifts:
        text = (
            f"predictions '{s.output}': total variation {s.total_variation:.3f} "
            f"(tolerated {s.tolerance:.3f}), G {s.g:.1f} on {s.df} df, p {s.p_value:.2g} "
            f"(level {s.alpha:.2g}), PSI {s.psi:.3f}, {sum(s.canary):.0f} canary / {sum(s.stable):.0f} stable"
        )
        if s.outcome == "fail":
            fails.append(text)
        elif s.outcome == "wait":
            waits.append(text + f": {t.min_requests} per side needed")
    outcomes = {s.outcome for s in shifts}
    checks["predictions"] = "fail" if "fail" in outcomes else "wait" if "wait" in outcomes else "pass"
    return shifts

"""The shadow gate's verdict (step 0 of ``rollout auto --shadow-gate``, in-pod modes): the
canary's mirrored answers against the ones callers got, before any user traffic moves.

Pure code, as serving.rollout.decision: the input is what Prometheus gives over one window
(``serving_shadow_rows_total`` per classifier output, ``serving_shadow_abs_diff``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from serving.rollout.decision import Thresholds, Verdict
from serving.rollout.statistics import proportion_diff, spent_alpha, z_for


@dataclass(frozen=True)
class ShadowSample:
    """Mirrored requests compared over one window (serving_shadow_rows_total and
    serving_shadow_abs_diff)."""

    rows: dict[str, dict[str, float]]
    """Class output -> {"agree": rows, "disagree": rows}."""
    compared: float
    """Mirrored requests compared."""
    abs_diff_q90: float | None
    """90th percentile of the largest absolute output difference per request (bucket-interpolated)."""


@dataclass(frozen=True)
class ShadowComparison:
    output: str
    rows: float
    disagree: float
    rate: float
    low: float
    high: float
    outcome: str  # "fail", "pass", "wait"


@dataclass(frozen=True)
class ShadowVerdict:
    verdict: Verdict
    reason: str
    sample: ShadowSample
    classes: list[ShadowComparison]
    alpha: float

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["verdict"] = self.verdict.value
        return out


def judge_shadow(sample: ShadowSample, thresholds: Thresholds, look: int | None = None) -> ShadowVerdict:
    """Rollback (refuse the candidate) when the mirrored answers disagree with the stable's
    beyond the tolerance; promote (start the canary steps) when they provably do not; hold
    otherwise. Class outputs: the share of rows whose class differs, its one-sided bounds as
    for errors (the lower at the look's spent level). Without class outputs: the 90th
    percentile of the absolute difference, once ``min_requests`` copies were compared."""
    t = thresholds
    alpha = spent_alpha(1.0 - t.confidence, look)
    classes: list[ShadowComparison] = []
    for output, counts in sorted(sample.rows.items()):
        disagree = counts.get("disagree", 0.0)
        n = disagree + counts.get("agree", 0.0)
        low, high = proportion_diff(disagree, n, 0.0, 0.0, z_for(alpha), z_for(1.0 - t.confidence))
        if n < t.min_requests:
            outcome = "wait"
        elif low > t.max_disagreement:
            outcome = "fail"
        elif high <= t.max_disagreement:
            outcome = "pass"
        else:
            outcome = "wait"
        classes.append(ShadowComparison(output, n, disagree, disagree / n if n else 0.0, low, high, outcome))
    texts = [
        f"'{c.output}': {c.disagree:.0f} of {c.rows:.0f} mirrored rows answered another class "
        f"({c.rate:.1%}, in [{c.low:.1%}, {c.high:.1%}]; tolerated {t.max_disagreement:.0%})"
        for c in classes
    ]
    outcomes = {c.outcome for c in classes}
    if classes:
        if "fail" in outcomes:
            return ShadowVerdict(Verdict.ROLLBACK, "; ".join(texts), sample, classes, alpha)
        if "wait" in outcomes:
            waits = f"; {t.min_requests} rows needed" if any(c.rows < t.min_requests for c in classes) else ""
            return ShadowVerdict(Verdict.HOLD, "; ".join(texts) + waits, sample, classes, alpha)
        return ShadowVerdict(Verdict.PROMOTE, "; ".join(texts), sample, classes, alpha)
    if sample.compared < t.min_requests or sample.abs_diff_q90 is None:
        reason = f"{sample.compared:.0f} mirrored requests compared, {t.min_requests} needed"
        return ShadowVerdict(Verdict.HOLD, reason, sample, classes, alpha)
    text = (
        f"90th percentile of the largest absolute output difference {sample.abs_diff_q90:.3g} "
        f"over {sample.compared:.0f} mirrored requests (tolerated {t.max_shadow_diff:g})"
    )
    verdict = Verdict.ROLLBACK if sample.abs_diff_q90 > t.max_shadow_diff else Verdict.PROMOTE
    return ShadowVerdict(verdict, text, sample, classes, alpha)

"""The canary verdict: promote, hold or rollback, from request counts and latency.

Pure code: no I/O. The inputs are what Prometheus gives over one window (requests, server
errors and p99 latency per side); the output names the verdict, the numbers and the reason.

Error ratio: small volumes make point estimates lie (1 error in 10 requests is 10 %), so
the comparison is on the Agresti-Caffo interval of the difference ``canary - stable``
(add one success and one failure to each side, then a Wald interval; good coverage down to
a handful of requests). The canary is *worse* when the whole one-sided interval lies above
``max_error_increase``; it is *safe* when the whole interval lies below it; in between the
data cannot tell yet and the verdict is hold.

Latency: the canary's p99 may exceed the stable p99 by ``latency_tolerance`` (relative) plus
``latency_slack_s`` (absolute, so sub-millisecond noise does not count as a regression).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from statistics import NormalDist
from typing import Any


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


@dataclass(frozen=True)
class ErrorComparison:
    canary_ratio: float
    stable_ratio: float
    diff_low: float
    diff_high: float
    outcome: str  # "worse", "safe", "inconclusive"


def compare_errors(stable: Sample, canary: Sample, thresholds: Thresholds) -> ErrorComparison:
    """Agresti-Caffo one-sided bounds on ``p_canary - p_stable`` at ``thresholds.confidence``."""
    z = NormalDist().inv_cdf(thresholds.confidence)
    n_c, x_c = canary.requests, min(canary.errors, canary.requests)
    pc = (x_c + 1) / (n_c + 2)
    var = pc * (1 - pc) / (n_c + 2)
    if stable.requests > 0:
        n_s, x_s = stable.requests, min(stable.errors, stable.requests)
        ps = (x_s + 1) / (n_s + 2)
        var += ps * (1 - ps) / (n_s + 2)
    else:
        ps = 0.0  # no baseline: judge the canary against zero errors
    diff = pc - ps
    half = z * math.sqrt(var)
    low, high = diff - half, diff + half
    tol = thresholds.max_error_increase
    if low > tol:
        outcome = "worse"
    elif high <= tol:
        outcome = "safe"
    else:
        outcome = "inconclusive"
    return ErrorComparison(canary.error_ratio, stable.error_ratio, low, high, outcome)


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

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["verdict"] = self.verdict.value
        return out


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.1f} ms"


def decide(stable: Sample, canary: Sample, thresholds: Thresholds | None = None) -> Analysis:
    """The verdict for one window. Rollback wins over hold, hold over promote."""
    t = thresholds or Thresholds()
    checks: dict[str, str] = {}
    fails: list[str] = []
    waits: list[str] = []

    if canary.requests < t.min_requests:
        checks["volume"] = "wait"
        waits.append(f"canary served {canary.requests:.0f} requests, {t.min_requests} needed")
    else:
        checks["volume"] = "pass"

    errors = compare_errors(stable, canary, t)
    detail = (
        f"error ratio canary {errors.canary_ratio:.2%} vs stable {errors.stable_ratio:.2%}, "
        f"difference in [{errors.diff_low:+.2%}, {errors.diff_high:+.2%}] "
        f"({t.confidence:.0%} one-sided), allowed +{t.max_error_increase:.2%}"
    )
    if errors.outcome == "worse":
        checks["errors"] = "fail"
        fails.append(detail)
    elif errors.outcome == "inconclusive":
        checks["errors"] = "wait"
        waits.append(detail)
    else:
        checks["errors"] = "pass"

    limit: float | None = None
    if stable.p99_s is not None:
        limit = stable.p99_s * (1 + t.latency_tolerance) + t.latency_slack_s
    if t.max_p99_s is not None:
        limit = t.max_p99_s if limit is None else min(limit, t.max_p99_s)
    if canary.p99_s is None or limit is None:
        checks["latency"] = "wait"
        waits.append(f"p99 not measurable yet (canary {_ms(canary.p99_s)}, stable {_ms(stable.p99_s)})")
    elif canary.p99_s > limit:
        checks["latency"] = "fail"
        fails.append(f"p99 canary {_ms(canary.p99_s)} > limit {_ms(limit)} (stable {_ms(stable.p99_s)})")
    else:
        checks["latency"] = "pass"

    # A clearly bad canary is rolled back even before the volume target: the interval
    # already accounts for how few requests there were. Latency needs the volume first,
    # because a p99 over a handful of requests is one request's time.
    if checks["errors"] == "fail" or (checks["latency"] == "fail" and checks["volume"] == "pass"):
        verdict, reason = Verdict.ROLLBACK, "; ".join(fails)
    elif waits or fails:
        verdict, reason = Verdict.HOLD, "; ".join(waits + fails)
    else:
        verdict = Verdict.PROMOTE
        reason = (
            f"{canary.requests:.0f} canary requests; {detail}; "
            f"p99 canary {_ms(canary.p99_s)} within {_ms(limit)}"
        )
    return Analysis(verdict, reason, stable, canary, errors, limit, checks)

"""The tests behind the canary verdict, pure and dependency-free (no SciPy in the CLI).

- :func:`proportion_diff` — Agresti-Caffo bounds on ``p_canary - p_stable`` (errors, and the
  share of requests slower than the stable's p99 bucket edge).
- :func:`shift_test` — is the canary's prediction distribution another one? A G-test of
  homogeneity on the per-bucket counts (significance) **and** the total-variation distance
  (effect size, the share of predictions that would have to move): large samples make any
  difference significant, so only a significant *and* large one counts. PSI is reported too.
- :func:`sample_ratio` — sample-ratio mismatch: the canary's share of requests against the
  share that was set (exact two-sided binomial test; its chi-square twin above 5,000 requests).
- :func:`spent_alpha` — many looks: the k-th look of a rollout may spend
  ``alpha * 6 / (pi^2 k^2)``; the sum over every look is ``alpha``, so by the union bound the
  chance that *any* look of the rollout wrongly fails a canary stays under ``alpha`` however
  many looks (holds) there are. A Bonferroni-type alpha-spending sequence (Lan & DeMets 1983
  spend a budget over looks; this one needs no planned number of looks).

Sources and conventions: /docs/guides/rollouts.md, "The statistics".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist

_NORMAL = NormalDist()
PSI_FLOOR = 1e-4
"""Share given to an empty bin in PSI (ln 0 is undefined); the usual convention."""


def z_for(alpha: float) -> float:
    """One-sided normal quantile: P(Z > z) = alpha."""
    return _NORMAL.inv_cdf(1.0 - min(max(alpha, 1e-15), 0.5))


def spent_alpha(alpha: float, look: int | None) -> float:
    """The share of ``alpha`` the ``look``-th look (1-based) may spend; all of it for a single
    look (``None``: an ``analyze`` run on its own)."""
    if look is None:
        return alpha
    return alpha * 6.0 / (math.pi**2 * max(1, look) ** 2)


# -- proportions ------------------------------------------------------------------------------
def proportion_diff(
    x_c: float, n_c: float, x_s: float, n_s: float, z_low: float, z_high: float
) -> tuple[float, float]:
    """Agresti-Caffo bounds on ``p_c - p_s``: one success and one failure added to each side,
    then a Wald interval (good coverage down to a handful of trials). ``z_low`` sets the
    lower bound's one-sided level, ``z_high`` the upper's. Without a stable side (``n_s`` 0)
    the canary is compared with zero."""
    x_c = min(x_c, n_c)
    pc = (x_c + 1) / (n_c + 2)
    var = pc * (1 - pc) / (n_c + 2)
    if n_s > 0:
        x_s = min(x_s, n_s)
        ps = (x_s + 1) / (n_s + 2)
        var += ps * (1 - ps) / (n_s + 2)
    else:
        ps = 0.0
    sd = math.sqrt(var)
    diff = pc - ps
    return diff - z_low * sd, diff + z_high * sd


# -- chi-square tail --------------------------------------------------------------------------
def chi2_sf(x: float, df: int) -> float:
    """P(X > x) for a chi-square variable with ``df`` degrees of freedom: the regularized upper
    incomplete gamma Q(df/2, x/2) (series below a + 1, continued fraction above; Numerical
    Recipes 6.2), good to ~1e-12."""
    if df <= 0:
        return 1.0
    if x <= 0:
        return 1.0
    a, y = df / 2.0, x / 2.0
    log_front = a * math.log(y) - y - math.lgamma(a)
    if y < a + 1.0:
        term = total = 1.0 / a
        ap = a
        for _ in range(10_000):
            ap += 1.0
            term *= y / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(log_front))
    tiny = 1e-300
    b = y + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return min(1.0, math.exp(log_front) * h)


# -- prediction shift -------------------------------------------------------------------------
@dataclass(frozen=True)
class ShiftTest:
    """Canary vs stable predictions of one output over one window."""

    output: str
    buckets: list[str]
    stable: list[float]
    canary: list[float]
    g: float
    df: int
    p_value: float
    total_variation: float
    psi: float
    alpha: float
    """The significance level this look used (after spending, split over outputs)."""
    tolerance: float
    outcome: str
    """``fail`` (significant and above the tolerance), ``pass``, or ``wait`` (too few)."""


def _bucket_order(label: str) -> tuple[int, float, str]:
    try:
        return (0, float(label), label)  # classes and edges in numeric order, +Inf last
    except ValueError:
        return (1, 0.0, label)  # "other"


def shift_test(
    output: str,
    stable: Mapping[str, float],
    canary: Mapping[str, float],
    alpha: float,
    tolerance: float,
    min_count: float,
) -> ShiftTest:
    """G-test of homogeneity (2 x K) and total-variation distance between the two sides'
    bucket counts; ``fail`` needs ``p < alpha`` and ``TV > tolerance``; ``wait`` while either
    side has fewer than ``min_count`` predictions."""
    buckets = sorted(
        (b for b in set(stable) | set(canary) if stable.get(b, 0.0) + canary.get(b, 0.0) > 0),
        key=_bucket_order,
    )
    s = [max(0.0, float(stable.get(b, 0.0))) for b in buckets]
    c = [max(0.0, float(canary.get(b, 0.0))) for b in buckets]
    n_s, n_c = sum(s), sum(c)
    if n_s <= 0 or n_c <= 0:
        return ShiftTest(output, buckets, s, c, 0.0, 0, 1.0, 0.0, 0.0, alpha, tolerance, "wait")
    n = n_s + n_c
    g = 0.0
    for s_i, c_i in zip(s, c, strict=True):
        col = s_i + c_i
        for observed, row in ((s_i, n_s), (c_i, n_c)):
            if observed > 0:
                g += observed * math.log(observed * n / (row * col))
    g *= 2.0
    df = len(buckets) - 1
    p_value = chi2_sf(g, df)
    tv = 0.5 * sum(abs(c_i / n_c - s_i / n_s) for s_i, c_i in zip(s, c, strict=True))
    psi = 0.0
    for s_i, c_i in zip(s, c, strict=True):
        a, e = max(c_i / n_c, PSI_FLOOR), max(s_i / n_s, PSI_FLOOR)
        psi += (a - e) * math.log(a / e)
    if n_s < min_count or n_c < min_count:
        outcome = "wait"
    elif p_value < alpha and tv > tolerance:
        outcome = "fail"
    else:
        outcome = "pass"
    return ShiftTest(output, buckets, s, c, g, df, p_value, tv, psi, alpha, tolerance, outcome)


# -- sample-ratio mismatch --------------------------------------------------------------------
@dataclass(frozen=True)
class SampleRatio:
    stable: float
    canary: float
    expected_share: float
    observed_share: float
    p_value: float
    threshold: float
    mismatch: bool


def binomial_two_sided(k: int, n: int, p: float) -> float:
    """Exact two-sided binomial p-value (the sum of every outcome no likelier than ``k``);
    the chi-square (1 df) approximation above 5,000 trials."""
    if n <= 0:
        return 1.0
    if p <= 0.0 or p >= 1.0:
        return 1.0 if k == round(n * p) else 0.0
    if n > 5000:
        expected = n * p
        chi = (k - expected) ** 2 / expected + (k - expected) ** 2 / (n - expected)
        return chi2_sf(chi, 1)
    log_p, log_q = math.log(p), math.log1p(-p)
    lg = math.lgamma

    def logpmf(i: int) -> float:
        return lg(n + 1) - lg(i + 1) - lg(n - i + 1) + i * log_p + (n - i) * log_q

    limit = logpmf(k) + 1e-7  # ties count, with room for rounding
    total = sum(math.exp(v) for v in (logpmf(i) for i in range(n + 1)) if v <= limit)
    return min(1.0, total)


def sample_ratio(stable: float, canary: float, percent: float, threshold: float) -> SampleRatio:
    """The canary's observed share of ``stable + canary`` requests against ``percent``."""
    n = round(stable + canary)
    k = min(n, round(canary))
    expected = percent / 100.0
    p_value = binomial_two_sided(k, n, expected)
    observed = canary / (stable + canary) if stable + canary > 0 else 0.0
    return SampleRatio(stable, canary, expected, observed, p_value, threshold, p_value < threshold)

"""The tests behind the verdict: chi-square tail, G-test with effect size, sample ratio,
alpha spending, tail exceedance, and the verdict's new checks on synthetic windows."""

from __future__ import annotations

import math

import pytest

from serving.rollout.auto import eta
from serving.rollout.decision import Sample, Thresholds, Verdict, decide
from serving.rollout.statistics import (
    binomial_two_sided,
    chi2_sf,
    sample_ratio,
    shift_test,
    spent_alpha,
)

LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5)


@pytest.mark.parametrize(
    ("x", "df", "p"),
    [
        (3.841458820694124, 1, 0.05),  # textbook critical values
        (6.634896601021214, 1, 0.01),
        (18.307038053275146, 10, 0.05),
        (124.34211340400407, 100, 0.05),
        (0.0, 3, 1.0),
        (2.0, 2, math.exp(-1.0)),  # df 2 is an exponential: P(X > x) = exp(-x / 2)
    ],
)
def test_chi2_tail(x: float, df: int, p: float) -> None:
    assert chi2_sf(x, df) == pytest.approx(p, rel=1e-9, abs=1e-12)


def test_binomial_exact_and_approximate() -> None:
    assert binomial_two_sided(5, 10, 0.5) == pytest.approx(1.0)
    assert binomial_two_sided(0, 10, 0.5) == pytest.approx(2 / 1024)
    assert binomial_two_sided(1, 10, 0.5) == pytest.approx(22 / 1024)
    # above 5,000 trials: chi-square twin, close to the exact figure
    assert binomial_two_sided(2900, 10_000, 0.3) == pytest.approx(0.0293, abs=0.002)


def test_sample_ratio_mismatch() -> None:
    ok = sample_ratio(stable=700, canary=290, percent=30, threshold=0.0005)
    assert not ok.mismatch and ok.observed_share == pytest.approx(290 / 990)
    bad = sample_ratio(stable=900, canary=60, percent=30, threshold=0.0005)
    assert bad.mismatch and bad.p_value < 1e-30


def test_alpha_spending_sums_to_alpha() -> None:
    assert spent_alpha(0.05, None) == 0.05
    assert sum(spent_alpha(0.05, k) for k in range(1, 200_000)) == pytest.approx(0.05, rel=1e-4)
    assert spent_alpha(0.05, 1) > spent_alpha(0.05, 2) > spent_alpha(0.05, 10)


def test_shift_needs_significance_and_size() -> None:
    same = {"0": 500.0, "1": 300.0, "2": 200.0}
    assert shift_test("p", same, {"0": 250.0, "1": 150.0, "2": 100.0}, 0.05, 0.1, 100).outcome == "pass"
    # inverted labels: the distribution moves wholesale
    swapped = shift_test("p", same, {"0": 100.0, "1": 150.0, "2": 250.0}, 0.05, 0.1, 100)
    assert swapped.outcome == "fail" and swapped.total_variation == pytest.approx(0.3)
    assert swapped.p_value < 1e-20 and swapped.psi > 0.25 and swapped.df == 2
    # significant on a million predictions, but a 2-point move is tolerated
    big = shift_test("p", {"0": 5e5, "1": 5e5}, {"0": 4.8e5, "1": 5.2e5}, 0.05, 0.1, 100)
    assert big.p_value < 1e-10 and big.outcome == "pass"
    # large on paper, but on 12 predictions it proves nothing
    small = shift_test("p", same, {"0": 4.0, "1": 1.0, "2": 3.0}, 0.05, 0.1, 8)
    assert small.total_variation > 0.15 and small.p_value > 0.3 and small.outcome == "pass"
    assert shift_test("p", same, {"0": 20.0}, 0.05, 0.1, 100).outcome == "wait"
    # buckets in numeric order, "other" last; a bucket neither side saw is left out
    order = shift_test("p", {"10": 1.0, "2": 1.0, "other": 1.0, "+Inf": 0.0}, {"2": 1.0}, 0.05, 0.1, 1)
    assert order.buckets == ["2", "10", "other"]


def latency(n: float, slow_share: float, slow_at: float = 0.3) -> dict[float, float]:
    """Cumulative buckets: (1 - slow_share) of ``n`` at 2 ms, the rest at ``slow_at``."""
    fast = n * (1 - slow_share)
    return {**{e: fast + (n - fast if e >= slow_at else 0.0) for e in LATENCY}, math.inf: n}


def window(n: float, errors: float, slow: float, predictions: dict[str, float] | None) -> Sample:
    p99 = 0.002 if slow < 0.01 else 0.3
    return Sample(n, errors, p99, latency(n, slow), None if predictions is None else {"class": predictions})


STABLE = window(2000, 2, 0.0, {"0": 1000.0, "1": 600.0, "2": 400.0})


def test_verdict_with_every_check() -> None:
    good = decide(STABLE, window(500, 0, 0.0, {"0": 240.0, "1": 160.0, "2": 100.0}))
    assert good.verdict is Verdict.PROMOTE, good.reason
    assert good.checks == {"volume": "pass", "errors": "pass", "latency": "pass", "predictions": "pass"}
    assert good.tail is not None and good.tail.edge_s == 0.01  # 2 ms x 1.5 + 5 ms = 8 ms, up to an edge
    assert good.prediction_shift[0].output == "class"

    inverted = decide(STABLE, window(500, 0, 0.0, {"0": 100.0, "1": 150.0, "2": 250.0}))
    assert inverted.verdict is Verdict.ROLLBACK and inverted.checks["predictions"] == "fail"
    assert "total variation 0.300" in inverted.reason
    data = inverted.to_dict()["prediction_shift"][0]
    assert data["canary"] == [100.0, 150.0, 250.0] and data["buckets"] == ["0", "1", "2"]

    slow = decide(STABLE, window(500, 0, 0.2, {"0": 240.0, "1": 160.0, "2": 100.0}))
    assert slow.verdict is Verdict.ROLLBACK and slow.checks["latency"] == "fail"
    assert slow.tail is not None and slow.tail.canary_share == pytest.approx(0.2)

    no_series = decide(STABLE, window(500, 0, 0.0, None))
    assert no_series.verdict is Verdict.HOLD and "no prediction series" in no_series.reason
    off = decide(STABLE, window(500, 0, 0.0, None), Thresholds(prediction_shift=False))
    assert off.verdict is Verdict.PROMOTE and "predictions" not in off.checks


def test_later_looks_are_stricter_for_rollback_only() -> None:
    borderline = window(100, 0, 0.0, {"0": 36.0, "1": 34.0, "2": 30.0})  # TV 0.14, p 0.013
    first, tenth = decide(STABLE, borderline, look=1), decide(STABLE, borderline, look=10)
    assert first.alpha is not None and tenth.alpha is not None and tenth.alpha < first.alpha / 50
    assert first.prediction_shift[0].p_value == tenth.prediction_shift[0].p_value
    assert first.checks["predictions"] == "fail" and tenth.checks["predictions"] == "pass"


def test_eta_of_a_hold() -> None:
    thresholds = Thresholds(min_requests=100)
    few = decide(STABLE, window(40, 0, 0.0, {"0": 20.0, "1": 12.0, "2": 8.0}), thresholds)
    assert few.verdict is Verdict.HOLD
    found = eta(few, thresholds, window_s=60)
    assert found is not None and found.requests >= 60
    assert found.seconds == pytest.approx(found.requests / (40 / 60), abs=2)
    assert (
        eta(decide(STABLE, window(500, 0, 0.0, {"0": 250.0, "1": 150.0, "2": 100.0})), thresholds, 60) is None
    )


def test_shadow_gate_verdicts() -> None:
    from serving.rollout.shadowgate import ShadowSample, judge_shadow

    t = Thresholds(min_requests=50)
    rotated = judge_shadow(ShadowSample({"probabilities": {"disagree": 120.0}}, 120, 0.9), t, look=1)
    assert rotated.verdict is Verdict.ROLLBACK and "120 of 120 mirrored rows" in rotated.reason
    retrained = judge_shadow(
        ShadowSample({"probabilities": {"agree": 290.0, "disagree": 6.0}}, 296, 0.3), t, 1
    )
    assert retrained.verdict is Verdict.PROMOTE, retrained.reason
    few = judge_shadow(ShadowSample({"probabilities": {"agree": 20.0}}, 20, 0.0), t, 1)
    assert few.verdict is Verdict.HOLD and "50 rows needed" in few.reason
    # no class output: the 90th percentile of the absolute difference decides
    assert judge_shadow(ShadowSample({}, 200, 0.02), t, 1).verdict is Verdict.PROMOTE
    assert judge_shadow(ShadowSample({}, 200, 0.4), t, 1).verdict is Verdict.ROLLBACK
    assert judge_shadow(ShadowSample({}, 10, 0.4), t, 1).verdict is Verdict.HOLD
    assert judge_shadow(ShadowSample({}, 200, 0.4), t, 1).to_dict()["verdict"] == "rollback"


def test_accuracy_against_ground_truth() -> None:
    t = Thresholds(accuracy=True, min_labels=100, prediction_shift=False)

    def labelled(n: float, wrong: float) -> Sample:
        return Sample(1000, 0, 0.002, latency(1000, 0.0), None, labelled=n, wrong=wrong)

    worse = decide(labelled(2000, 100), labelled(400, 80), t)  # 5 % -> 20 % wrong
    assert worse.verdict is Verdict.ROLLBACK and worse.checks["accuracy"] == "fail"
    assert worse.accuracy is not None and "accuracy canary 80.00% vs stable 95.00%" in worse.reason
    same = decide(labelled(2000, 100), labelled(600, 30), t)
    assert same.verdict is Verdict.PROMOTE and same.checks["accuracy"] == "pass", same.reason
    few = decide(labelled(2000, 100), labelled(20, 1), t)
    assert few.verdict is Verdict.HOLD and "ground truth for 20 canary" in few.reason

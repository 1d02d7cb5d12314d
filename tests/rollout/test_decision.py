"""The verdict on synthetic windows: volume, small-sample error comparison, latency."""

from __future__ import annotations

import random

import pytest

from serving.rollout.decision import Sample, Thresholds, Verdict, compare_errors, decide

# These windows carry p99s only (no buckets, no predictions): the point latency comparison.
T = Thresholds(
    min_requests=100,
    max_error_increase=0.02,
    latency_tolerance=0.5,
    latency_slack_s=0.005,
    prediction_shift=False,
)


def window(rng: random.Random, n: int, error_rate: float, p99_s: float) -> Sample:
    """A synthetic window: n Bernoulli requests, and the given p99."""
    errors = sum(rng.random() < error_rate for _ in range(n))
    return Sample(requests=n, errors=errors, p99_s=p99_s)


def test_too_few_canary_requests_holds() -> None:
    result = decide(Sample(5000, 0, 0.004), Sample(40, 0, 0.004), T)
    assert result.verdict is Verdict.HOLD
    assert result.checks["volume"] == "wait"
    assert "40 requests, 100 needed" in result.reason
    assert result.verdict.exit_code == 2


def test_clean_canary_with_volume_promotes() -> None:
    result = decide(Sample(5000, 3, 0.004), Sample(400, 0, 0.0045), T)
    assert result.verdict is Verdict.PROMOTE, result.reason
    assert result.checks == {"volume": "pass", "errors": "pass", "latency": "pass"}
    assert result.verdict.exit_code == 0


def test_one_error_in_ten_is_not_a_rollback() -> None:
    # point estimate 10 % vs 0 %, but ten requests prove nothing
    errors = compare_errors(Sample(2000, 0), Sample(10, 1), T)
    assert errors.canary_ratio == pytest.approx(0.1)
    assert errors.outcome == "inconclusive"
    assert decide(Sample(2000, 0, 0.004), Sample(10, 1, 0.004), T).verdict is Verdict.HOLD


def test_many_errors_in_few_requests_roll_back_before_volume() -> None:
    result = decide(Sample(2000, 0, 0.004), Sample(30, 15, 0.004), T)
    assert result.verdict is Verdict.ROLLBACK
    assert result.checks["errors"] == "fail"
    assert "error ratio canary 50.00%" in result.reason
    assert result.verdict.exit_code == 1


def test_small_clean_canary_is_inconclusive_until_enough_requests() -> None:
    # 0/120 errors: the upper bound is still above the allowed +2 points -> hold
    assert compare_errors(Sample(5000, 0), Sample(120, 0), T).outcome == "inconclusive"
    assert compare_errors(Sample(5000, 0), Sample(300, 0), T).outcome == "safe"


def test_error_ratio_matching_stable_promotes() -> None:
    # both at 1 %: not worse, and enough data to say so
    assert decide(Sample(20000, 200, 0.01), Sample(2000, 20, 0.01), T).verdict is Verdict.PROMOTE


def test_latency_regression_rolls_back() -> None:
    result = decide(Sample(5000, 0, 0.004), Sample(500, 0, 0.060), T)
    assert result.verdict is Verdict.ROLLBACK
    assert result.checks["latency"] == "fail"
    assert result.p99_limit_s == pytest.approx(0.004 * 1.5 + 0.005)
    assert "p99 canary 60.0 ms > limit 11.0 ms" in result.reason


def test_latency_noise_below_slack_passes() -> None:
    # 0.2 ms -> 0.5 ms is 2.5x but far below the absolute slack
    assert decide(Sample(5000, 0, 0.0002), Sample(500, 0, 0.0005), T).verdict is Verdict.PROMOTE


def test_latency_on_few_requests_holds_instead_of_rollback() -> None:
    result = decide(Sample(5000, 0, 0.004), Sample(20, 0, 0.5), T)
    assert result.verdict is Verdict.HOLD
    assert result.checks["latency"] == "fail"


def test_absolute_p99_ceiling() -> None:
    t = Thresholds(min_requests=10, max_p99_s=0.008, prediction_shift=False)
    assert decide(Sample(500, 0, 0.009), Sample(500, 0, 0.009), t).verdict is Verdict.ROLLBACK


def test_no_latency_data_holds() -> None:
    result = decide(Sample(0, 0, None), Sample(500, 0, None), T)
    assert result.verdict is Verdict.HOLD
    assert result.checks["latency"] == "wait"


def test_no_stable_traffic_compares_against_zero_errors() -> None:
    assert compare_errors(Sample(0, 0), Sample(400, 0), T).outcome == "safe"
    assert compare_errors(Sample(0, 0), Sample(400, 40), T).outcome == "worse"


@pytest.mark.parametrize("seed", range(20))
def test_synthetic_series_good_and_bad(seed: int) -> None:
    """Across random windows: a canary as good as stable is never rolled back, a canary
    with 10 % extra errors or 4x latency is always rolled back at 500 requests."""
    rng = random.Random(seed)
    stable = window(rng, 5000, 0.005, 0.004)
    good = window(rng, 500, 0.005, 0.0042)
    assert decide(stable, good, T).verdict is Verdict.PROMOTE
    bad_errors = window(rng, 500, 0.10, 0.004)
    assert decide(stable, bad_errors, T).verdict is Verdict.ROLLBACK
    slow = window(rng, 500, 0.005, 0.016)
    assert decide(stable, slow, T).verdict is Verdict.ROLLBACK


def test_to_dict_is_json_ready() -> None:
    import json

    out = decide(Sample(5000, 0, 0.004), Sample(400, 0, 0.004), T).to_dict()
    text = json.dumps(out)
    assert '"verdict": "promote"' in text
    assert out["canary"]["requests"] == 400

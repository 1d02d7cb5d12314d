"""Many simulated rollouts through the real verdict (serving.rollout.decision.decide), as
``rollout auto`` runs it: steps 10/25/50/100, the k-th look spending its share of alpha, each
look judging everything since its step began, up to 10 holds per step.

Each interval brings ``RATE`` requests, split by the step's percentage; errors are binomial
draws, predicted classes multinomial draws, latency all in one bucket (the latency test has its
own unit tests). Figures in docs/guides/rollouts.md ("Many looks") come from ``report()``:

    .venv/bin/python -m tests.rollout.test_simulation
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from serving.rollout.decision import Sample, Thresholds, Verdict, decide

STEPS = (10, 25, 50, 100)
RATE = 5000
"""Requests per interval (about 83 per second for one-minute intervals)."""
MAX_HOLDS = 10
CLASSES = np.array([0.5, 0.3, 0.2])
LATENCY = {0.0025: 1.0, math.inf: 1.0}  # shares at or below each edge: everything at 2 ms


@dataclass(frozen=True)
class Scenario:
    stable_errors: float = 0.01
    canary_errors: float = 0.01
    canary_classes: tuple[float, ...] = (0.5, 0.3, 0.2)


def sample(n: int, errors: int, classes: np.ndarray) -> Sample:
    return Sample(
        float(n),
        float(errors),
        0.002,
        {edge: share * n for edge, share in LATENCY.items()},
        {"class": {str(i): float(c) for i, c in enumerate(classes)}},
    )


def rollout(rng: np.random.Generator, s: Scenario, thresholds: Thresholds, spend: bool = True) -> str:
    """One simulated ``auto`` run: ``rollback``, ``promote`` or ``gave_up``."""
    look = 0
    canary_p = np.asarray(s.canary_classes)
    for percent in STEPS[:-1]:
        n_c = n_s = e_c = e_s = 0
        k_c, k_s = np.zeros(3), np.zeros(3)
        for _hold in range(MAX_HOLDS):
            look += 1
            c = int(rng.binomial(RATE, percent / 100))
            n_c, n_s = n_c + c, n_s + RATE - c
            e_c += int(rng.binomial(c, s.canary_errors))
            e_s += int(rng.binomial(RATE - c, s.stable_errors))
            k_c += rng.multinomial(c, canary_p)
            k_s += rng.multinomial(RATE - c, CLASSES)
            verdict = decide(
                sample(n_s, e_s, k_s), sample(n_c, e_c, k_c), thresholds, look if spend else None
            )
            if verdict.verdict is Verdict.ROLLBACK:
                return "rollback"
            if verdict.verdict is Verdict.PROMOTE:
                break
        else:
            return "gave_up"
    return "promote"


def rates(
    scenario: Scenario, runs: int, seed: int, spend: bool = True, thresholds: Thresholds | None = None
) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    thresholds = thresholds or Thresholds()
    ends = [rollout(rng, scenario, thresholds, spend) for _ in range(runs)]
    return {end: ends.count(end) / runs for end in ("rollback", "promote", "gave_up")}


EQUAL = Scenario()
AT_TOLERANCE = Scenario(stable_errors=0.01, canary_errors=0.03)  # +2 points: the allowed increase
DOUBLE_ERRORS = Scenario(stable_errors=0.05, canary_errors=0.10)
SHIFTED = Scenario(canary_classes=(0.35, 0.3, 0.35))  # total variation 0.15


def test_equal_canary_is_rarely_rolled_back_and_promoted() -> None:
    found = rates(EQUAL, 2000, seed=1)
    assert found["rollback"] <= 0.05, found
    assert found["promote"] >= 0.95, found


def test_canary_at_the_allowed_increase_keeps_the_false_rollback_rate() -> None:
    """The hardest null: errors exactly at the tolerance. Every look is a chance to fail it
    wrongly; spending keeps the whole rollout under alpha = 5 %, looks at a fixed 5 % do not."""
    spent = rates(AT_TOLERANCE, 1500, seed=2)
    assert spent["rollback"] <= 0.05, spent


def test_g_test_alone_keeps_the_false_rollback_rate() -> None:
    """Equal predictions, the effect-size gate off (tolerance 0): only the G-test at the spent
    level decides, and the whole rollout still wrongly fails under 5 % of the time."""
    found = rates(EQUAL, 1500, seed=5, thresholds=Thresholds(max_prediction_shift=0.0))
    assert found["rollback"] <= 0.05, found


def test_double_error_rate_and_clear_shift_are_caught() -> None:
    errors = rates(DOUBLE_ERRORS, 1000, seed=3)
    assert errors["rollback"] >= 0.95, errors
    shifted = rates(SHIFTED, 1000, seed=4)
    assert shifted["rollback"] >= 0.95, shifted


def report() -> None:
    g_only = Thresholds(max_prediction_shift=0.0)
    for name, scenario, thresholds in (
        ("equal canary", EQUAL, None),
        ("equal predictions, G-test alone", EQUAL, g_only),
        ("errors at the allowed +2 points", AT_TOLERANCE, None),
        ("double error rate (5 % -> 10 %)", DOUBLE_ERRORS, None),
        ("prediction shift (TV 0.15)", SHIFTED, None),
    ):
        spent = rates(scenario, 4000, 11, thresholds=thresholds)
        fixed = rates(scenario, 4000, 11, spend=False, thresholds=thresholds)
        print(
            f"{name:34} spent: rollback {spent['rollback']:.2%} promote {spent['promote']:.2%} "
            f"gave up {spent['gave_up']:.2%} | fixed 5 % per look: rollback {fixed['rollback']:.2%}"
        )


if __name__ == "__main__":
    report()

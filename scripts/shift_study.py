"""The study behind the prediction-shift defaults (docs/guides/rollouts.md, "Prediction shift").

For two demo models (iris multiclass: the arg-max class is counted; breast cancer binary: the
probability falls in the default tenths), a candidate is compared with the incumbent the way a
rollout does: rows drawn from the data set as traffic, the candidate's and the incumbent's answers
counted into the server's buckets (serving.observability.predictions), then the rollout's test
(serving.rollout.statistics.shift_test) at the first look's level and the default tolerance.
Candidates: retrained on another bootstrap sample and seed (should pass), the two input
columns the model leans on most swapped, labels inverted (iris: rotated), +0.3 on the probability (should roll back).

    .venv/bin/python scripts/shift_study.py [--canary 500] [--trials 200]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from serving.observability.predictions import output_rules
from serving.rollout.decision import Thresholds
from serving.rollout.statistics import shift_test, spent_alpha


def train(x: Any, y: Any, params: dict[str, Any], rounds: int, seed: int = 0) -> Any:
    import xgboost as xgb

    return xgb.train(
        {"nthread": 1, "seed": seed, **params}, xgb.DMatrix(x.astype(np.float32), label=y), rounds
    )


def predictor(booster: Any) -> Callable[[Any], Any]:
    import xgboost as xgb

    return lambda x: booster.predict(xgb.DMatrix(x.astype(np.float32)))


def candidates(
    x: Any, y: Any, params: dict[str, Any], rounds: int, classes: int
) -> dict[str, Callable[[Any], Any]]:
    rng = np.random.default_rng(1)
    sample = rng.integers(0, len(y), len(y))
    booster = train(x, y, params, rounds)
    incumbent = predictor(booster)
    # the two features the model leans on most (by gain): a swap of unused ones changes nothing
    gain = booster.get_score(importance_type="gain")
    a, b = sorted(range(x.shape[1]), key=lambda i: -gain.get(f"f{i}", 0.0))[:2]
    order = list(range(x.shape[1]))
    order[a], order[b] = b, a
    inverted = (y + 1) % classes if classes > 2 else 1 - y
    return {
        "incumbent": incumbent,
        "retrained (bootstrap sample, seed 1)": predictor(
            train(x[sample], y[sample], params, rounds, seed=1)
        ),
        f"input columns {a} and {b} swapped": lambda rows: incumbent(rows[:, order]),
        "labels inverted" if classes == 2 else "labels rotated": predictor(
            train(x, inverted, params, rounds)
        ),
        "+0.3 on the probability": lambda rows: (
            incumbent(rows) + 0.3 if classes == 2 else incumbent(rows) + np.array([0.0, 0.0, 0.3])
        ),
    }


def main() -> None:
    from sklearn.datasets import load_breast_cancer, load_iris

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--canary", type=int, default=500, help="canary predictions per window")
    parser.add_argument("--stable", type=int, default=2000, help="stable predictions per window")
    parser.add_argument("--trials", type=int, default=200)
    args = parser.parse_args()
    t = Thresholds()
    alpha = spent_alpha(1 - t.confidence, 1)
    rng = np.random.default_rng(0)
    print(f"tolerance TV {t.max_prediction_shift}, level {alpha:.4f} (first look), {args.canary} canary / "
          f"{args.stable} stable predictions, {args.trials} windows each")  # fmt: skip
    for name, load, params, rounds, shape in (
        ("iris (3 classes; traffic 60/30/10 %)", load_iris, {"objective": "multi:softprob", "num_class": 3, "max_depth": 3}, 20, (-1, 3)),
        ("breast cancer (P(benign), tenths)", load_breast_cancer, {"objective": "binary:logistic", "max_depth": 4, "eta": 0.3}, 50, (-1,)),
    ):  # fmt: skip
        x, y = load(return_X_y=True)
        classes = int(y.max()) + 1
        weights = np.ones(len(y)) if classes == 2 else np.array([(0.6, 0.3, 0.1)[c] for c in y])
        weights = weights / weights.sum()
        (rule,) = output_rules([("out", "FP32", shape)], {})
        models = candidates(x, y, params, rounds, classes)
        answers = {label: rule.buckets(model(x)) for label, model in models.items()}
        size = len(rule.labels)
        print(f"\n{name}")
        for label, buckets in answers.items():
            if label == "incumbent":
                continue
            fails, tvs = 0, []
            for _ in range(args.trials):
                s_rows = rng.choice(len(y), args.stable, p=weights)
                c_rows = rng.choice(len(y), args.canary, p=weights)
                s = np.bincount(answers["incumbent"][s_rows], minlength=size)
                c = np.bincount(buckets[c_rows], minlength=size)
                test = shift_test(
                    "out",
                    {rule.labels[i]: float(v) for i, v in enumerate(s)},
                    {rule.labels[i]: float(v) for i, v in enumerate(c)},
                    alpha,
                    t.max_prediction_shift,
                    t.min_requests,
                )
                fails += test.outcome == "fail"
                tvs.append(test.total_variation)
            agree = float(np.mean(buckets == answers["incumbent"]))
            print(f"  {label:38} TV median {np.median(tvs):.3f}  rolled back {fails / args.trials:6.1%}  "
                  f"(same bucket as incumbent on {agree:.0%} of rows)")  # fmt: skip


if __name__ == "__main__":
    main()

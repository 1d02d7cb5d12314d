"""The profile format, its validation, the binning and PSI (serving/observability/profile.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from serving.observability.profile import (
    Binner,
    ProfileError,
    build_profile,
    drift_figures,
    parse_profile,
    read_profile,
    write_profile,
)


def _table(rows: int = 4000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    numeric = rng.normal(10.0, 2.0, rows)
    skewed = rng.exponential(1.0, rows)
    category = rng.choice([0, 1, 2], rows, p=[0.5, 0.3, 0.2]).astype(np.float64)
    with_missing = rng.normal(size=rows)
    with_missing[rng.random(rows) < 0.1] = np.nan
    return np.stack([numeric, skewed, category, with_missing], axis=1)


NAMES = ["numeric", "skewed", "category", "with_missing"]


def _profile(x: np.ndarray) -> dict[str, object]:
    score = 1 / (1 + np.exp(-(x[:, 0] - 10)))
    return build_profile(x, NAMES, {"probability": score}, "input", bins=10, source="train")


def test_profile_describes_each_column_and_round_trips(tmp_path: Path) -> None:
    x = _table()
    doc = _profile(x)
    path = tmp_path / "profile.json"
    write_profile(doc, path)
    profile = read_profile(path, 4, "input", {"probability"})
    kinds = [c.kind for c in profile.features]
    assert kinds == ["numeric", "numeric", "categorical", "numeric"]
    numeric = json.loads(path.read_text())["features"][0]
    assert len(numeric["edges"]) == 9 and numeric["min"] < numeric["edges"][0]
    assert all(abs(s - 0.1) < 0.002 for s in numeric["shares"])  # quantile bins: equal shares
    category = json.loads(path.read_text())["features"][2]
    assert category["categories"] == [0, 1, 2]
    assert abs(category["shares"][0] - 0.5) < 0.03
    assert abs(profile.features[3].shares[-1] - 0.1) < 0.02  # the missing slot
    for column in (*profile.features, *profile.outputs):
        assert abs(column.shares.sum() - 1) < 1e-9
    assert [c.name for c in profile.outputs] == ["probability"]


def test_psi_small_for_the_same_distribution_large_for_a_shift() -> None:
    profile = parse_profile(_profile(_table()), 4, "input")
    fresh = _table(2000, seed=1)
    report = drift_figures(profile, fresh, {"probability": 1 / (1 + np.exp(-(fresh[:, 0] - 10)))})
    assert all(f["psi"] < 0.05 for f in report["features"].values()), report
    shifted = fresh.copy()
    shifted[:, 0] += 2 * 2.0  # two standard deviations
    report = drift_figures(profile, shifted, {"probability": 1 / (1 + np.exp(-(shifted[:, 0] - 10)))})
    assert report["features"]["numeric"]["psi"] > 1.0
    assert all(report["features"][n]["psi"] < 0.05 for n in NAMES[1:])
    assert report["outputs"]["probability"]["psi"] > 0.25


def test_bad_values_are_counted_never_raised() -> None:
    profile = parse_profile(_profile(_table()), 4, "input")
    binner = Binner(profile.features)
    rows = np.array(
        [
            [np.inf, 1.0, 7.0, np.nan],  # +inf: out of range; 7: unseen category; NaN: missing
            [-1e30, np.nan, 1.0, 0.0],
            [10.0, 1.0, 2.0, 0.0],
        ]
    )
    counts, out_of_range, missing = binner.count(rows)
    assert counts.sum() == 3 * 4  # every value lands in exactly one slot
    assert out_of_range.tolist() == [2, 0, 1, 0]
    assert missing.tolist() == [0, 1, 0, 1]
    category = profile.features[2]
    unseen_slot = int(binner.offsets[2]) + len(category.cuts)
    assert counts[unseen_slot] == 1
    assert np.isfinite(binner.psi(counts)).all()


def test_profiles_that_do_not_fit_are_refused_with_the_reason() -> None:
    doc = _profile(_table())
    with pytest.raises(ProfileError, match="profiles 4 features, the model takes 5"):
        parse_profile(doc, 5, "input")
    with pytest.raises(ProfileError, match="input 'input', the model's input is 'x'"):
        parse_profile(doc, 4, "x")
    with pytest.raises(ProfileError, match="no output value 'probability'"):
        parse_profile(doc, 4, "input", {"label", "probabilities[0]"})
    with pytest.raises(ProfileError, match="format_version 9"):
        parse_profile({**doc, "format_version": 9}, 4, "input")
    broken = json.loads(json.dumps(doc))
    broken["features"][0]["shares"][0] = 0.9
    with pytest.raises(ProfileError, match="sum to 1"):
        parse_profile(broken, 4, "input")
    with pytest.raises(ProfileError, match=r"not a serving\.profile"):
        parse_profile([], 4, "input")

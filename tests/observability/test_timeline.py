"""The status page's ring buffer (serving/observability/timeline.py), on a clock the test moves."""

from __future__ import annotations

import numpy as np
import pytest

from serving.labels import UNKNOWN_MODEL
from serving.observability import timeline
from serving.observability.metrics import Metrics
from serving.observability.timeline import BOUNDS, SLOTS, Series, Timeline, quantile, quantiles, summarize


class Clock:
    def __init__(self, now: float = 1000.2) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(timeline, "_monotonic", fake)
    return fake


def test_rates_errors_and_quantiles_of_the_last_full_seconds(clock: Clock) -> None:
    series = Series()
    for second in range(12):
        clock.now = 1000.2 + second
        for i in range(100):
            series.ok(0.001 if i < 98 else 0.050)  # p50 1 ms; p99 in the 50 ms tail
        series.error(0.002)
    clock.now += 1  # the 12th second is now full; nothing in the current one
    figures = summarize(series, now=int(clock.now))
    assert figures["requests"] == 10 * 101 and figures["errors"] == 10
    assert figures["rate"] == pytest.approx(101.0)
    assert figures["error_share"] == pytest.approx(10 / 1010, abs=1e-4)
    assert figures["p50_ms"] == pytest.approx(1.0, rel=0.2)
    assert figures["p99_ms"] == pytest.approx(50.0, rel=0.2)
    # Points start at the first busy one (at least MIN_POINTS of them), each step_s long.
    rates = [p["rate"] for p in figures["points"]]
    assert len(rates) == timeline.MIN_POINTS and rates[-6:] == [101.0] * 6 and rates[0] == 0.0


def test_old_seconds_fall_out_of_the_ring(clock: Clock) -> None:
    series = Series()
    series.ok(0.001)
    clock.now += SLOTS + 5  # past the ring: the old slot must read as empty, not as data
    requests, errors, latency = series.window()
    assert requests.sum() == 0 and errors.sum() == 0 and latency.sum() == 0
    series.error(0.001)
    assert series.window()[0].sum() == 1 and series.window()[1][-1] == 1


def test_a_gap_of_a_few_seconds_clears_only_those_slots(clock: Clock) -> None:
    series = Series()
    series.ok(0.001)
    clock.now += 3
    series.ok(0.001)
    requests = series.window()[0]
    assert requests[-1] == 1 and requests[-4] == 1 and requests[-3:-1].sum() == 0


def test_quantile_is_linear_inside_the_bucket_and_none_when_empty() -> None:
    histogram = np.zeros(len(BOUNDS) + 1, dtype=np.int64)
    assert quantile(histogram, 0.5) is None
    histogram[10] = 4
    low, high = BOUNDS[9], BOUNDS[10]
    assert quantile(histogram, 0.5) == pytest.approx(low + (high - low) * 0.5)
    histogram[:] = 0
    histogram[-1] = 1  # above the last bound: the bound is all we know
    assert quantile(histogram, 0.99) == BOUNDS[-1]


def test_metrics_feed_the_timeline_per_version_with_shadow_copies_apart() -> None:
    metrics = Metrics()
    metrics.observe_request("m", "1", "stable", "rest", "2xx", 0.001)
    metrics.observe_request("m", "2", "canary", "rest", "5xx", 0.001)
    metrics.observe_request("m", "2", "shadow", "rest", "2xx", 0.001)
    metrics.observe_request("m", "none", "stable", "rest", "4xx", 0.001)
    metrics.observe_request(UNKNOWN_MODEL, "none", "stable", "rest", "4xx", 0.001)
    answered = {v: s.window()[:2] for v, s in metrics.timeline.versions("m")}
    assert {v: (int(r.sum()), int(e.sum())) for v, (r, e) in answered.items()} == {
        "1": (1, 0),
        "2": (1, 1),
        "none": (1, 1),
    }
    copies = dict(metrics.timeline.versions("m", shadow=True))
    assert list(copies) == ["2"] and copies["2"].window()[0].sum() == 1
    assert not list(metrics.timeline.versions(UNKNOWN_MODEL))  # unbounded names stay out


def test_health_sources_merge_and_a_failing_one_is_skipped() -> None:
    line = Timeline()
    assert line.model_health("m") == {}

    def broken(model: str) -> dict[str, float]:
        raise RuntimeError("monitoring is down")

    line.health += [lambda model: {"drift:x": 0.1}, broken, lambda model: {"prediction_shift": 0.02}]
    assert line.model_health("m") == {"drift:x": 0.1, "prediction_shift": 0.02}


def test_quantiles_of_many_rows_agree_with_one_row_at_a_time() -> None:
    rng = np.random.default_rng(30)
    rows = rng.integers(0, 5, size=(40, len(BOUNDS) + 1)) * (rng.random((40, len(BOUNDS) + 1)) < 0.1)
    rows[0] = 0  # an empty point
    rows[1] = 0
    rows[1, -1] = 3  # only above the last bound
    for q in (0.5, 0.99):
        expected = [quantile(row, q) for row in rows]
        assert quantiles(rows, q) == pytest.approx(expected)
        assert expected[0] is None and expected[1] == BOUNDS[-1]

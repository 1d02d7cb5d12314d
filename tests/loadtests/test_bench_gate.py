"""The benchmark's regression gate (loadtests/bench.py) on synthetic rows: ratios to the floor
measured in the same run are compared with a baseline's, never absolute req/s."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from loadtests import bench
from loadtests.bench import Row, regression_gate

CONNS = (1, 8, 64)


def run(
    speed: float = 1.0,
    ours: float = 1.0,
    overrides: dict[tuple[str, str, int], float] | None = None,
    drop: tuple[str, ...] = (),
) -> list[Row]:
    """A synthetic full run: the floors and our rows. ``speed`` scales every req/s (a faster or
    slower machine), ``ours`` scales only our rows, ``overrides`` scales single rows of ours by
    (protocol, model, connections) and ``drop`` leaves targets out."""
    overrides = overrides or {}
    rows: list[Row] = []

    def add(target: str, protocol: str, model: str, conns: int, rps: float, p99: float) -> None:
        if target in drop:
            return
        factor = speed * (1.0 if target in ("raw-asgi", "grpc-floor") else ours)
        factor *= overrides.get((protocol, model, conns), 1.0) if target == "ours" else 1.0
        rows.append(Row(target, protocol, model, 1, conns, rps=rps * factor, p99_us=p99, requests=1000))

    for c in CONNS:
        add("raw-asgi", "json", "bench-xgb", c, 40_000.0, 2_000.0)
        add("grpc-floor", "grpc", "bench-xgb", c, 6_000.0, 10_000.0)
        add("ours", "json", "bench-onnx", c, 9_000.0, 10_000.0)
        add("ours", "grpc", "bench-onnx", c, 2_800.0, 30_000.0)
        add("ours", "json", "bench-heavy", c, 2_900.0, 33_000.0)
        add("ours", "json", "bench-heavy-batched", c, 8_700.0, 10_000.0)
    return rows


def by_name(verdict: bench.GateVerdict) -> dict[str, bench.GateCheck]:
    return {c.name: c for c in verdict.checks}


def test_identical_runs_pass_with_every_figure_compared() -> None:
    verdict = regression_gate(run(), run())
    assert verdict.passed
    # 4 of our models x 3 connection counts, plus two lifts of which the adaptive one is missing
    assert len(verdict.compared) == 13
    assert verdict.summary().startswith("PASS: 13 figures")
    checks = by_name(verdict)
    assert checks["ours json bench-onnx rows=1 c=64"].baseline == pytest.approx(9_000 / 40_000)
    assert checks["ours grpc bench-onnx rows=1 c=8"].baseline == pytest.approx(2_800 / 6_000)
    assert checks["lift bench-heavy-batched / bench-heavy c=64"].current == pytest.approx(3.0)


def test_slower_machine_with_ratios_within_tolerance_passes() -> None:
    # the whole machine is half as fast and ours loses 5 % against the floor: not a regression
    verdict = regression_gate(run(speed=0.5, ours=0.95), run())
    assert verdict.passed, verdict.summary()
    changes = [c.change for c in verdict.compared if c.name.startswith("ours")]
    assert changes and all(change == pytest.approx(-0.05) for change in changes)


def test_same_absolute_speed_but_faster_floor_fails() -> None:
    # ours kept its req/s but the floor measured next to it got 20 % faster: ours lost ground
    verdict = regression_gate(run(speed=1.2, ours=1 / 1.2), run())
    assert not verdict.passed
    assert {c.name for c in verdict.failures} == {
        c.name for c in verdict.compared if c.name.startswith("ours")
    }


def test_one_row_fifteen_percent_below_fails_only_that_row() -> None:
    current = run(overrides={("json", "bench-onnx", 64): 0.85})
    verdict = regression_gate(current, run(), tolerance=0.10)
    assert not verdict.passed
    assert [c.name for c in verdict.failures] == ["ours json bench-onnx rows=1 c=64"]
    failure = verdict.failures[0]
    assert failure.change == pytest.approx(-0.15)
    assert "FAIL" in verdict.summary() and "ours json bench-onnx rows=1 c=64" in verdict.summary()
    # a looser tolerance lets the same run through
    assert regression_gate(current, run(), tolerance=0.20).passed


def test_nine_percent_below_passes() -> None:
    verdict = regression_gate(run(overrides={("json", "bench-onnx", 64): 0.91}), run())
    assert verdict.passed
    assert by_name(verdict)["ours json bench-onnx rows=1 c=64"].change == pytest.approx(-0.09)


def test_missing_floor_row_is_not_compared_not_failed() -> None:
    # no gRPC floor in this run, and our gRPC rows halved: they cannot be judged, so not failed
    current = run(drop=("grpc-floor",), overrides={("grpc", "bench-onnx", c): 0.5 for c in CONNS})
    verdict = regression_gate(current, run())
    assert verdict.passed
    grpc = by_name(verdict)["ours grpc bench-onnx rows=1 c=8"]
    assert not grpc.compared and not grpc.failed
    assert grpc.note == "no grpc-floor row in this run"
    assert by_name(verdict)["ours json bench-onnx rows=1 c=8"].compared
    # and the same on the baseline's side
    grpc = by_name(regression_gate(run(), run(drop=("grpc-floor",))))["ours grpc bench-onnx rows=1 c=8"]
    assert grpc.note == "no grpc-floor row in baseline"


def test_rows_missing_on_either_side_are_listed_as_not_compared() -> None:
    baseline = run()
    current = [r for r in run() if r.model != "bench-heavy-batched"]
    current.append(Row("ours", "binary", "bench-onnx", 1, 8, rps=9_000.0, p99_us=9_000.0))
    current.append(Row("ours", "json", "bench-onnx", 1000, 8, note="failed: boom"))
    baseline.append(Row("ours", "json", "bench-onnx", 1000, 8, rps=120.0, p99_us=80_000.0))
    checks = by_name(regression_gate(current, baseline))
    assert checks["ours json bench-heavy-batched rows=1 c=64"].note == "not in this run"
    assert checks["ours binary bench-onnx rows=1 c=8"].note == "not in baseline"
    assert checks["ours json bench-onnx rows=1000 c=8"].note == "not measured in this run"
    assert checks["lift bench-heavy-batched / bench-heavy c=64"].note == "not measured in this run"
    assert not any(c.failed for c in checks.values())
    markdown = regression_gate(current, baseline).markdown("base.csv")
    assert (
        "| ours binary bench-onnx rows=1 c=8 | - | 0.225 | - | - | not compared (not in baseline) |"
        in markdown
    )


def test_batching_lift_drop_fails_even_when_every_ratio_holds() -> None:
    # the unbatched model got 20 % faster, the batched one stayed: each row's ratio to the floor
    # is fine, but batching now lifts 3.0 / 1.2 = 2.5x instead of 3.0x
    current = run(overrides={("json", "bench-heavy", c): 1.2 for c in CONNS})
    verdict = regression_gate(current, run())
    assert [c.name for c in verdict.failures] == ["lift bench-heavy-batched / bench-heavy c=64"]
    lift = verdict.failures[0]
    assert lift.baseline == pytest.approx(3.0) and lift.current == pytest.approx(2.5)
    # a larger lift passes
    better = run(overrides={("json", "bench-heavy-batched", 64): 1.3})
    assert regression_gate(better, run()).passed


def test_p99_ratio_is_shown_and_gated_only_on_request() -> None:
    current = [dataclasses.replace(r, p99_us=r.p99_us * 1.3) if r.target == "ours" else r for r in run()]
    shown = regression_gate(current, run())
    assert shown.passed
    assert by_name(shown)["ours json bench-onnx rows=1 c=64"].p99_change == pytest.approx(0.3)
    gated = regression_gate(current, run(), p99_tolerance=0.2)
    assert not gated.passed
    assert gated.failures[0].note == "p99 ratio +30.0%"


def test_nothing_to_compare_is_said_not_passed_silently() -> None:
    verdict = regression_gate(run(), [])
    assert verdict.passed and not verdict.compared
    assert verdict.summary().startswith("NOT COMPARED")


def test_markdown_section_has_table_and_verdict() -> None:
    verdict = regression_gate(run(overrides={("json", "bench-onnx", 64): 0.85}), run())
    markdown = verdict.markdown("loadtests/latest/results.csv")
    assert "## Regression gate" in markdown
    assert "| row | baseline ratio | this run | change | p99 ratio change | result |" in markdown
    assert "| ours json bench-onnx rows=1 c=64 | 0.225 | 0.1913 | -15.0% | +0.0% | FAIL |" in markdown
    assert "| lift bench-heavy-batched / bench-heavy c=64 | 3x | 3x | +0.0% | - | pass |" in markdown
    assert "Verdict: FAIL: 1 of 13" in markdown


def test_csv_round_trip_and_gate_section(tmp_path: Path) -> None:
    rows = run()
    rows.append(Row("ours", "json", "bench-onnx", 1000, 8, note="skipped: HTTP 400"))
    path = tmp_path / "results.csv"
    bench.write_csv(rows, path)
    assert bench.read_csv(path) == rows
    section, ok = bench.gate_section(run(ours=0.8), bench.read_csv(path), path, 0.10, None)
    assert not ok and f"Baseline `{path}`" in section and "Verdict: FAIL" in section


def test_baseline_resolution(tmp_path: Path) -> None:
    def args(**kw: object) -> argparse.Namespace:
        return argparse.Namespace(**{"smoke": False, "no_gate": False, "baseline": None, **kw})

    existing = tmp_path / "base.csv"
    existing.write_text("target\n")
    assert bench.resolve_baseline(args(baseline=existing)) == existing
    assert bench.resolve_baseline(args(smoke=True, baseline=existing)) is None
    assert bench.resolve_baseline(args(no_gate=True, baseline=existing)) is None
    assert bench.resolve_baseline(args()) == (
        bench.DEFAULT_BASELINE if bench.DEFAULT_BASELINE.exists() else None
    )
    with pytest.raises(SystemExit, match="no such file"):
        bench.resolve_baseline(args(baseline=tmp_path / "missing.csv"))


def _round(factor: float, model: str = "bench-onnx", conns: int = 64, floor: float = 1.0) -> list[Row]:
    """One recheck round: our point re-measured at ``factor`` of the baseline's speed, and its
    floor at ``floor`` of the baseline floor's."""
    return [
        Row("ours", "json", model, 1, conns, rps=9_000.0 * factor, p99_us=10_000.0, requests=1000),
        Row("raw-asgi", "json", "bench-xgb", 1, conns, rps=40_000.0 * floor, p99_us=2_000.0, requests=1000),
    ]


def test_a_figure_that_failed_once_passes_on_the_median_of_its_rechecks() -> None:
    current = run(overrides={("json", "bench-onnx", 64): 0.85})
    first = regression_gate(current, run())
    assert [c.name for c in first.failures] == ["ours json bench-onnx rows=1 c=64"]
    # what the recheck measures: the failing point and its floor, nothing else
    assert first.failures[0].points == [
        ("ours", bench.Point("json", "bench-onnx", 1, 64)),
        ("raw-asgi", bench.Point("json", "bench-xgb", 1, 64)),
    ]
    # three rounds: one slow minute (0.8) among two normal ones; the floor moved too (1.1),
    # so each round's ratio is taken within that round
    rounds = [_round(0.99 * 1.1, floor=1.1), _round(0.8), _round(1.02)]
    again = bench.recheck_verdict(first, current, run(), rounds)
    assert again.passed
    check = by_name(again)["ours json bench-onnx rows=1 c=64"]
    assert check.rechecks == pytest.approx([0.22275, 0.18, 0.2295])
    assert check.current == pytest.approx(0.22275)  # the median, not the first 0.19125
    assert check.note.startswith("median of 3 rechecks: 0.2228, 0.18, 0.2295; first 0.1913")
    # figures that passed at first are left as they were
    assert (
        by_name(again)["ours json bench-onnx rows=1 c=8"] == by_name(first)["ours json bench-onnx rows=1 c=8"]
    )


def test_a_real_regression_still_fails_after_its_rechecks() -> None:
    current = run(overrides={("json", "bench-onnx", 64): 0.85})
    first = regression_gate(current, run())
    again = bench.recheck_verdict(first, current, run(), [_round(0.86), _round(0.84), _round(0.95)])
    assert [c.name for c in again.failures] == ["ours json bench-onnx rows=1 c=64"]
    assert by_name(again)["ours json bench-onnx rows=1 c=64"].change == pytest.approx(-0.14)
    assert "Verdict: FAIL: 1 of 13" in again.markdown("base.csv")
    # no rounds (--recheck 0): the first verdict stands
    assert bench.recheck_verdict(first, current, run(), []) is first


def test_a_lift_is_rechecked_on_both_of_its_models() -> None:
    current = run(overrides={("json", "bench-heavy", c): 1.2 for c in CONNS})
    first = regression_gate(current, run())
    lift = first.failures[0]
    assert lift.points == [
        ("ours", bench.Point("json", "bench-heavy-batched", 1, 64)),
        ("ours", bench.Point("json", "bench-heavy", 1, 64)),
    ]
    rounds = [
        [
            Row("ours", "json", "bench-heavy-batched", 1, 64, rps=8_700.0, requests=1000),
            Row("ours", "json", "bench-heavy", 1, 64, rps=2_900.0 * s, requests=1000),
        ]
        for s in (1.0, 1.05, 0.98)
    ]
    again = bench.recheck_verdict(first, current, run(), rounds)
    assert again.passed and by_name(again)[lift.name].current == pytest.approx(3.0 / 1.0)


def test_with_the_baseline_code_measured_beside_ours_the_a_b_ratio_decides() -> None:
    """A machine that slowed our large process and not the floor's small one fails the ratio
    to the floor; rounds of ours against the baseline's own code, side by side, say whether
    the code is slower."""
    current = run(overrides={("json", "bench-onnx", 64): 0.85})
    first = regression_gate(current, run())

    def ab_round(new: float, old: float) -> list[Row]:
        return [
            Row("ours", "json", "bench-onnx", 1, 64, rps=new, requests=1000),
            Row(bench.BASELINE_CODE, "json", "bench-onnx", 1, 64, rps=old, requests=1000),
        ]

    same_code = [ab_round(7_650.0, 7_500.0), ab_round(6_000.0, 6_300.0), ab_round(7_000.0, 7_000.0)]
    again = bench.recheck_verdict(first, current, run(), same_code)
    assert again.passed
    check = by_name(again)["ours json bench-onnx rows=1 c=64"]
    assert check.rechecks == pytest.approx([1.02, 6_000 / 6_300, 1.0])
    assert check.note == "A/B against the baseline's code, new/old req/s: 1.020, 0.952, 1.000; median 1.000"
    slower_code = [ab_round(6_300.0, 7_500.0), ab_round(6_000.0, 6_300.0), ab_round(5_900.0, 7_000.0)]
    assert [c.name for c in bench.recheck_verdict(first, current, run(), slower_code).failures] == [
        "ours json bench-onnx rows=1 c=64"
    ]


def test_the_baseline_commit_is_the_one_that_wrote_the_baseline(tmp_path: Path) -> None:
    latest = bench.ROOT / "loadtests" / "latest" / "results.csv"
    commit = bench.baseline_commit(latest)
    assert commit is not None and len(commit) == 40
    outside = tmp_path / "results.csv"
    outside.write_text("target\n")
    assert bench.baseline_commit(outside) is None


def lift_round(ours: tuple[float, float], old: tuple[float, float]) -> list[Row]:
    """One recheck round of the batching lift: (batched, unbatched) req/s on our server and on
    the baseline's code."""
    rows = []
    for target, (batched, unbatched) in (("ours", ours), (bench.BASELINE_CODE, old)):
        rows.append(Row(target, "json", "bench-heavy-batched", 1, 64, rps=batched, requests=1000))
        rows.append(Row(target, "json", "bench-heavy", 1, 64, rps=unbatched, requests=1000))
    return rows


def test_a_lift_is_judged_against_the_baseline_codes_lift() -> None:
    current = run(overrides={("json", "bench-heavy", c): 1.2 for c in CONNS})
    first = regression_gate(current, run())
    name = "lift bench-heavy-batched / bench-heavy c=64"
    assert [c.name for c in first.failures] == [name]

    # both servers' lifts move together from round to round: the code's lift holds
    holds = [lift_round((9_000, 5_000), (9_200, 5_000)), lift_round((7_000, 5_000), (7_000, 5_100))]
    again = by_name(bench.recheck_verdict(first, current, run(), holds))[name]
    assert not again.failed
    assert again.rechecks == pytest.approx([9_000 / 9_200, 1.02])
    assert again.note.startswith("A/B against the baseline's code, batched new/old req/s: 0.978, 1.000")
    assert again.note.endswith("new/old lift 0.978, 1.020; our lift median 1.60x")
    # ours batches less than the baseline's code, side by side: fails
    worse = [lift_round((6_000, 5_000), (9_000, 5_000)), lift_round((6_500, 5_000), (9_100, 5_000))]
    assert by_name(bench.recheck_verdict(first, current, run(), worse))[name].failed


def test_a_lift_that_shrank_because_unbatched_got_faster_passes() -> None:
    """The batched model as fast as on the baseline's code, the unbatched one 1.2x faster: the
    lift is 0.83x the old one, but nothing got slower."""
    current = run(overrides={("json", "bench-heavy", c): 1.2 for c in CONNS})
    first = regression_gate(current, run())
    name = "lift bench-heavy-batched / bench-heavy c=64"

    faster_unbatched = [
        lift_round((9_000, 6_000), (9_000, 5_000)),
        lift_round((8_800, 6_100), (8_700, 5_000)),
    ]
    again = by_name(bench.recheck_verdict(first, current, run(), faster_unbatched))[name]
    assert not again.failed
    assert again.rechecks == pytest.approx([5_000 / 6_000, (8_800 / 8_700) / (6_100 / 5_000)])
    # the same rounds with batching now slower than not batching: fails, though the batched
    # model itself held A/B
    batching_loses = [lift_round((9_000, 9_500), (9_000, 5_000)), lift_round((8_800, 9_400), (8_700, 5_000))]
    assert by_name(bench.recheck_verdict(first, current, run(), batching_loses))[name].failed

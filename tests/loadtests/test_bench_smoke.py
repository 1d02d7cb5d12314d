"""The benchmark harness in its smoke mode, so it cannot rot: our server and the floors,
one-second points, real wrk and gRPC load against real processes."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

from loadtests import bench
from tests.server_process import ROOT


def test_bench_smoke_writes_csv_table_and_chart(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(ROOT / "loadtests" / "bench.py"), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    measured = {(r["target"], r["protocol"], r["model"], r["connections"]): r for r in rows}
    for key in [
        ("in-process", "call", "bench-xgb", "1"),
        ("in-process", "call", "bench-onnx", "1"),
        ("raw-asgi", "json", "bench-xgb", "1"),
        ("ours", "json", "bench-onnx", "1"),
        ("ours", "json", "bench-onnx", "8"),
        ("ours", "grpc", "bench-onnx", "8"),
        ("ours", "json", "bench-xgb", "8"),
    ]:
        row = measured[key]
        assert float(row["rps"]) > 0 and int(row["requests"]) > 0, row
        assert int(row["errors"]) == 0, row
        assert 0 < float(row["p50_us"]) <= float(row["p99_us"]), row
    table = (out / "results.md").read_text()
    assert "| ours | json | bench-onnx | 1 | 8 |" in table
    assert "python loadtests/bench.py --smoke" in table
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the regression gate does not judge one-second points ...
    assert "Regression gate: not run, --smoke" in table and "## Regression gate" not in table
    # ... but its code path runs on this real output: against itself it passes, against a
    # baseline where ours was 25 % faster relative to the floor it fails that row
    smoke_rows = bench.read_csv(out / "results.csv")
    section, ok = bench.gate_section(smoke_rows, smoke_rows, out / "results.csv", 0.10, None)
    assert ok, section
    assert "| ours json bench-onnx rows=1 c=8 |" in section and "+0.0% | pass |" in section
    assert (
        "| ours grpc bench-onnx rows=1 c=8 | - | - | - | - | not compared (no grpc-floor row in baseline) |"
        in section
    )
    faster = [
        dataclasses.replace(r, rps=r.rps * 1.25)
        if (r.target, r.model, r.connections) == ("ours", "bench-xgb", 8)
        else r
        for r in smoke_rows
    ]
    bench.write_csv(faster, tmp_path / "baseline.csv")
    section, ok = bench.gate_section(
        smoke_rows, bench.read_csv(tmp_path / "baseline.csv"), "b.csv", 0.10, None
    )
    assert not ok
    assert "| ours json bench-xgb rows=1 c=8 |" in section and "-20.0% |" in section and "FAIL" in section


def test_recheck_measures_the_failed_points_and_their_floors_again(tmp_path: Path) -> None:
    """``Bench.recheck`` on real servers: the failed figure's point and its floor's, each
    round, next to each other (the gate's ``--recheck``; its verdict is tested on synthetic
    rows in test_bench_gate.py)."""
    args = bench_args(tmp_path)
    runner = bench.Bench(args)
    try:
        bench.write_repo(runner.work, heavy=False, train_rows=2_000)
        py = sys.executable
        floor_port, http, grpc_port = bench.free_port(), bench.free_port(), bench.free_port()
        runner.targets["raw-asgi"] = bench.Target(
            "raw-asgi", [py, str(ROOT / "loadtests" / "raw_asgi.py"), str(floor_port)], floor_port,
            ready_path="/", check_value=False,
        )  # fmt: skip
        runner.targets["ours"] = bench.Target(
            "ours",
            [py, "-m", "serving.cli", "serve", "--model-repo", str(runner.work / "repo"), "--host", "127.0.0.1",
             "--http-port", str(http), "--grpc-port", str(grpc_port), "--log-level", "warning"],
            http, grpc_port, env={"SERVING_WORKERS": "1"},
        )  # fmt: skip
        failed = bench.regression_gate(
            [
                bench.Row("raw-asgi", "json", "bench-xgb", 1, 1, rps=10_000.0),
                bench.Row("ours", "json", "bench-onnx", 1, 1, rps=1_000.0),
            ],
            [
                bench.Row("raw-asgi", "json", "bench-xgb", 1, 1, rps=10_000.0),
                bench.Row("ours", "json", "bench-onnx", 1, 1, rps=5_000.0),
            ],
        ).failures
        assert [c.name for c in failed] == ["ours json bench-onnx rows=1 c=1"]
        rounds = runner.recheck(failed, 2)
    finally:
        shutil.rmtree(runner.work, ignore_errors=True)
    assert len(rounds) == 2
    first, second = ([(r.target, r.model, r.connections) for r in rows] for rows in rounds)
    assert first == [("raw-asgi", "bench-xgb", 1), ("ours", "bench-onnx", 1)]
    assert second == first[::-1]  # the order turns every other round
    for row in rounds[0] + rounds[1]:
        assert row.rps > 0 and row.errors == 0 and row.requests > 0, row
    assert (args.out / "logs" / "ours-recheck-2.log").exists()  # a fresh server each round


def bench_args(tmp_path: Path) -> argparse.Namespace:
    return argparse.Namespace(
        out=tmp_path / "out", duration=0.5, warmup=0.2, server_cpu=0, client_cpu=1, recheck=2
    )

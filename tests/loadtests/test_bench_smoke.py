"""The benchmark harness in its smoke mode, so it cannot rot: our server and the floors,
one-second points, real wrk and gRPC load against real processes."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

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

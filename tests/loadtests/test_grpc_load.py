"""loadtests/grpc_load.py against the real server: unary and ``--stream`` callers both get
their answers (the benchmark's grpc and grpc-stream rows)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.server_process import ROOT, ServerProcess


@pytest.mark.parametrize("mode", [[], ["--stream"]], ids=["unary", "stream"])
def test_callers_get_answers(demo_server: ServerProcess, mode: list[str]) -> None:
    script = str(ROOT / "loadtests" / "grpc_load.py")
    options = ["--features", "4", "-c", "4", "-d", "1", *mode]
    run = subprocess.run(
        [sys.executable, script, demo_server.grpc_target, "iris-xgb", *options],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    (line,) = [x for x in run.stdout.splitlines() if x.startswith("GRPCJSON ")]
    result = json.loads(line.removeprefix("GRPCJSON "))
    assert result["requests"] > 10 and result["errors"] == 0
    assert 0 < result["p50_us"] <= result["p99_us"]

"""loadtests/grpc_servers.py in a short run, so the harness cannot rot: grpc.aio and the
thread-pool server (``sync-N``) each serve grpc_floor.py's fixed answer to real load, and the
summary has a positive rate for each. (The grpclib mode needs its own virtualenv, which the
harness installs on first use: not done in the suite, which downloads nothing.)"""

from __future__ import annotations

import re
import subprocess
import sys

from tests.server_process import ROOT


def test_modes_serve_and_summarise() -> None:
    script = str(ROOT / "loadtests" / "grpc_servers.py")
    options = ["--rounds", "1", "-d", "1", "-c", "2", "--modes", "aio,sync-2"]
    run = subprocess.run([sys.executable, script, *options], capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for mode in ("aio", "sync-2"):
        (line,) = [x for x in run.stdout.splitlines() if re.match(rf"c=2 +{mode} ", x)]
        rate = re.search(r"([\d,]+) req/s", line)
        assert rate and float(rate[1].replace(",", "")) > 0, line

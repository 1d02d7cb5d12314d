from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.references import REPORT_ENV, is_reference_skip, summary_line
from tests.server_process import DEMO_REPO, REST_PATHS, ServerProcess, start_server


@pytest.fixture(scope="session", params=REST_PATHS)
def rest_path(request: pytest.FixtureRequest) -> str:
    """Who answers REST inference routes (``Settings.rest_infer_path``): REST protocol, edge,
    error and reliability tests run on both (module servers take ``rest_env(rest_path)``)."""
    return str(request.param)


_reference_skips: set[str] = set()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if is_reference_skip(report):
        _reference_skips.add(report.nodeid)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how many checks against reference files were skipped; scripts/test.sh reads the line
    from ``$SERVING_REFERENCE_REPORT`` and prints it as the run's last line."""
    # collection-time skips (a module that needs a reference to be collected) count too
    for report in terminalreporter.stats.get("skipped", []):
        if is_reference_skip(report):
            _reference_skips.add(report.nodeid)
    line = summary_line(len(_reference_skips))
    terminalreporter.write_line(line)
    target = os.environ.get(REPORT_ENV)
    if target:
        Path(target).write_text(line + "\n")


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real server on the committed demo repository, shared by read-only tests.
    REST on ``server.url`` and gRPC on ``server.grpc_target``."""
    server = start_server(DEMO_REPO, tmp_path_factory.mktemp("demo-server"), grpc=True)
    yield server
    server.stop()

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.server_process import DEMO_REPO, ServerProcess, start_server


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real server on the committed demo repository, shared by read-only tests.
    REST on ``server.url`` and gRPC on ``server.grpc_target``."""
    server = start_server(DEMO_REPO, tmp_path_factory.mktemp("demo-server"), grpc=True)
    yield server
    server.stop()

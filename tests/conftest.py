from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.server_process import DEMO_REPO, REST_PATHS, ServerProcess, start_server


@pytest.fixture(scope="session", params=REST_PATHS)
def rest_path(request: pytest.FixtureRequest) -> str:
    """Who answers REST inference routes (``Settings.rest_infer_path``): REST protocol, edge,
    error and reliability tests run on both (module servers take ``rest_env(rest_path)``)."""
    return str(request.param)


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real server on the committed demo repository, shared by read-only tests.
    REST on ``server.url`` and gRPC on ``server.grpc_target``."""
    server = start_server(DEMO_REPO, tmp_path_factory.mktemp("demo-server"), grpc=True)
    yield server
    server.stop()

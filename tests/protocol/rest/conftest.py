from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.server_process import DEMO_REPO, ServerProcess, rest_env, start_server


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory: pytest.TempPathFactory, rest_path: str) -> Iterator[ServerProcess]:
    """The demo server of tests/conftest.py once per REST inference path: the REST tests
    here run on the protocol-level path and on the ASGI one."""
    server = start_server(
        DEMO_REPO, tmp_path_factory.mktemp(f"demo-server-{rest_path}"), grpc=True, env=rest_env(rest_path)
    )
    yield server
    server.stop()

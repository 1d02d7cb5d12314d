"""Fixtures for the versions / canary / shadow / model control tests: a copy of the demo
two-version model (iris-xgb) with a traffic policy, served by the real server."""

from __future__ import annotations

import http.client
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.server_process import DEMO_REPO, ServerProcess, start_server

TOKEN = "test-admin-token-5f1c-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ENV = {"SERVING_ADMIN_TOKEN": TOKEN, "SERVING_DRAIN_DELAY_SECONDS": "0"}
ROW = [5.1, 3.5, 1.4, 0.2]
BODY = b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[[5.1,3.5,1.4,0.2]]}]}'


def iris_repo(root: Path, **config: Any) -> Path:
    """``root/iris-xgb``: the demo model's two versions with extra config keys (traffic…)."""
    model = root / "iris-xgb"
    shutil.copytree(DEMO_REPO / "iris-xgb", model)
    doc = yaml.safe_load((model / "config.yaml").read_text())
    doc.update(config)
    (model / "config.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return root


class Client:
    """A small keep-alive HTTP/1.1 client (http.client): cheap enough per request that
    tens of thousands of calls finish in seconds."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def infer(
        self,
        body: bytes = BODY,
        headers: dict[str, str] | None = None,
        path: str = "/v2/models/iris-xgb/infer",
    ) -> tuple[int, str | None, str | None, bytes]:
        self.conn.request("POST", path, body, {"content-type": "application/json", **(headers or {})})
        response = self.conn.getresponse()
        data = response.read()
        return (
            response.status,
            response.getheader("x-model-version"),
            response.getheader("x-model-variant"),
            data,
        )

    def close(self) -> None:
        self.conn.close()


@pytest.fixture(scope="package")
def canary_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """iris-xgb at 90/10 (versions 1/2) with the admin API enabled. Tests that change the
    traffic policy put it back (DELETE /v2/models/iris-xgb/traffic)."""
    root = iris_repo(tmp_path_factory.mktemp("canary-repo"), traffic={"weights": {1: 90, 2: 10}})
    server = start_server(root, tmp_path_factory.mktemp("canary-server"), grpc=False, env=ENV)
    yield server
    server.stop()

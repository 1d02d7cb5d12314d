"""serving/supervisor.py: ``--workers N`` with no SERVING_TRAFFIC_POLICY_DIR gives the workers a
private traffic-policy store, so a traffic change through whichever worker answers reaches every
worker; the store is removed when the server stops. An explicit directory is kept."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import httpx

from serving.settings import Settings
from serving.supervisor import private_policy_store
from tests.server_process import running_server
from tests.versions.conftest import AUTH, BODY, ENV, iris_repo


def versions_answering(url: str, n: int) -> set[str]:
    """The versions that answer n requests, each on a new connection (SO_REUSEPORT spreads
    connections over the workers)."""
    seen = set()
    for _ in range(n):
        answer = httpx.post(f"{url}/v2/models/iris-xgb/infer", content=BODY, headers={"connection": "close"})
        assert answer.status_code == 200, answer.text
        seen.add(answer.json()["model_version"])
    return seen


def test_workers_accept_traffic_changes_without_a_policy_dir(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SERVING_TRAFFIC_POLICY_DIR"} | ENV
    with running_server(
        iris_repo(tmp_path), tmp_path / "logs", args=["--workers", "2"], grpc=False, env=env
    ) as server:
        assert versions_answering(server.url, 6) == {"2"}  # the newest version, as config.yaml says
        put = httpx.put(
            f"{server.url}/v2/models/iris-xgb/traffic", json={"weights": {"1": 100}}, headers=AUTH
        )
        assert put.status_code == 200, put.text
        # every worker follows within a poll (1 s): both report generation 1, and only version 1
        # answers, whichever worker takes the connection
        deadline = time.monotonic() + 30
        while True:
            status = httpx.get(f"{server.url}/v2/models/iris-xgb/traffic").json()
            workers = status.get("workers", {})
            if len(workers) == 2 and set(workers.values()) == {1}:
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.2)
        assert versions_answering(server.url, 20) == {"1"}
        # the workers' store: a private folder of the supervisor's in the temporary directory
        # (tests run side by side, so other servers' stores may be there too: name this one)
        store = Path(status["store"]["file"]).parent
        assert store.parent == Path(tempfile.gettempdir()) and store.name.startswith("serving-policies-")
        assert store.is_dir()
    # the supervisor removes its private store when it exits
    assert not store.exists()


def test_an_explicit_policy_dir_is_kept(tmp_path: Path) -> None:
    settings = Settings(model_repo=tmp_path, workers=2, traffic_policy_dir=tmp_path / "policies")
    assert private_policy_store(settings) is settings
    private = private_policy_store(Settings(model_repo=tmp_path, workers=2))
    assert private.traffic_policy_dir is not None and private.traffic_policy_dir.is_dir()
    assert private.traffic_policy_dir.name.startswith("serving-policies-")

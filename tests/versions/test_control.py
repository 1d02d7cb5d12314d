"""The model control operations in-process, on a real repository and dataplane: a loading
version is visibly LOADING and gets no traffic until its warmup is done; with several worker
processes, run-time changes are refused instead of reaching one worker."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from serving.errors import Forbidden
from serving.inference import InferenceRequest, Tensor
from serving.server import Components, build, load_models
from serving.settings import Settings
from tests.versions.conftest import ROW, iris_repo
from tests.waiting import wait_until_async


def request() -> InferenceRequest:
    data = np.array([ROW], dtype=np.float32)
    return InferenceRequest("iris-xgb", None, [Tensor("input", "FP32", data.shape, data)])


def start(repo: Path, **settings: object) -> Components:
    parts = build(Settings(model_repo=repo, admin_token="control-test-token-0123456789", **settings))  # type: ignore[arg-type]
    load_models(parts)
    parts.dataplane.started = True
    return parts


def stop(parts: Components) -> None:
    parts.repository.close()
    parts.executor.shutdown()


def test_a_new_version_is_loading_and_gets_nothing_until_warm(tmp_path: Path) -> None:
    repo = iris_repo(tmp_path)
    parts = start(repo)
    control = parts.control
    assert control is not None
    model_dir = repo / "iris-xgb"
    doc = yaml.safe_load((model_dir / "config.yaml").read_text())
    doc["warmup"] = {"batch_sizes": [4096], "repeat": 60}  # a warmup long enough to watch
    (model_dir / "config.yaml").write_text(yaml.safe_dump(doc))
    shutil.copytree(model_dir / "2", model_dir / "3")

    async def scenario() -> tuple[set[str], list[str], dict[str, list[str]]]:
        task = asyncio.create_task(control.rescan())
        states: set[str] = set()
        served_while_loading: list[str] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60  # then stop sampling and just wait for the rescan
        while not task.done() and loop.time() < deadline:
            row = next((r for r in control.index() if r.get("version") == "3"), None)
            state = row["state"] if row else "ABSENT"
            states.add(state)
            response = await parts.dataplane.infer(request())
            if state in ("ABSENT", "LOADING"):
                served_while_loading.append(response.version)
            await asyncio.sleep(0.001)
        changes = await task
        return states, served_while_loading, changes

    try:
        states, served, changes = asyncio.run(scenario())
        assert changes["loaded"] == ["iris-xgb/3"]
        assert "LOADING" in states and "FAILED" not in states
        assert served and set(served) == {"2"}, "no request reached version 3 before it was warm"
        entry = parts.repository.version("iris-xgb", "3")
        assert entry.ready and entry.warmup_seconds > 0
        assert asyncio.run(parts.dataplane.infer(request())).version == "3"  # latest READY now
    finally:
        stop(parts)


def test_several_workers_refuse_run_time_changes(tmp_path: Path) -> None:
    parts = start(iris_repo(tmp_path), workers=2)
    control = parts.control
    assert control is not None
    try:
        with pytest.raises(Forbidden, match="2 worker processes"):
            asyncio.run(control.set_traffic("iris-xgb", {"weights": {"1": 1}}))
        with pytest.raises(Forbidden, match="only the one that answers"):
            asyncio.run(control.unload("iris-xgb"))
        with pytest.raises(Forbidden):
            asyncio.run(control.load("iris-xgb"))
        with pytest.raises(Forbidden):
            asyncio.run(control.reload())
        # reading works, and so does the poller's re-read (every worker runs its own)
        assert control.traffic("iris-xgb")["effective"]["shares"] == {"2": 1.0}
        assert asyncio.run(control.rescan()) == {"loaded": [], "unloaded": [], "failed": []}
    finally:
        stop(parts)


MAX_SERVED = 50_000


def test_reloading_a_serving_version_swaps_it_without_a_failed_request(tmp_path: Path) -> None:
    repo = iris_repo(tmp_path, traffic={"weights": {1: 50, 2: 50}})
    parts = start(repo)
    control = parts.control
    assert control is not None
    old = parts.repository.version("iris-xgb", "1")
    doc = yaml.safe_load((repo / "iris-xgb/config.yaml").read_text())
    doc["description"] = "changed: every version reloads"
    (repo / "iris-xgb/config.yaml").write_text(yaml.safe_dump(doc))

    async def scenario() -> tuple[list[str], list[dict[str, str]]]:
        stop_load = asyncio.Event()
        served: list[str] = []

        async def client() -> None:
            while not stop_load.is_set() and len(served) < MAX_SERVED:
                served.append((await parts.dataplane.infer(request())).version)

        clients = [asyncio.create_task(client()) for _ in range(4)]
        await wait_until_async(lambda: len(served) >= 20, 30, message="the clients never got answers")
        rows = await control.load("iris-xgb")
        # more answers after the reload, unless the clients already made all theirs during it
        enough = min(len(served) + 20, MAX_SERVED)
        await wait_until_async(lambda: len(served) >= enough, 30, message="no answers after the reload")
        stop_load.set()
        await asyncio.gather(*clients)  # any failed request would raise here
        return served, rows

    try:
        served, rows = asyncio.run(scenario())
        assert {r["version"]: r["state"] for r in rows} == {"1": "READY", "2": "READY"}
        assert set(served) == {"1", "2"} and len(served) > 20
        new = parts.repository.version("iris-xgb", "1")
        assert new is not old and new.config.description.startswith("changed")
        assert old.state.value == "UNAVAILABLE" and old.reason == "replaced by a new load"
        assert old.runtime is None and old.inflight == 0
    finally:
        stop(parts)

"""Load, unload, re-read and weight changes under a real client loop lose no request."""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.server_process import ServerProcess, running_server
from tests.versions.conftest import AUTH, ENV, Client, iris_repo
from tests.waiting import wait_until

CLIENTS = 3
MAX_SECONDS = 60
MAX_PER_CLIENT = 20_000


@dataclass
class Load:
    """Client threads that call the model without naming a version until stopped."""

    server: ServerProcess
    stop: threading.Event = field(default_factory=threading.Event)
    results: list[tuple[float, float, int, str | None]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    answered: int = 0

    def run(self) -> None:
        client = Client(self.server.http_port)
        local: list[tuple[float, float, int, str | None]] = []
        deadline = time.monotonic() + MAX_SECONDS
        try:
            while not self.stop.is_set() and len(local) < MAX_PER_CLIENT and time.monotonic() < deadline:
                sent = time.monotonic()
                try:
                    status, version, _, body = client.infer()
                except OSError as exc:  # a dropped connection is a lost request too
                    with self.lock:
                        self.errors.append(f"{type(exc).__name__}: {exc}")
                    client.close()
                    client = Client(self.server.http_port)
                    continue
                local.append((sent, time.monotonic(), status, version))
                with self.lock:
                    self.answered += 1
                if status != 200:
                    with self.lock:
                        self.errors.append(f"{status}: {body[:200]!r}")
        finally:
            client.close()
            with self.lock:
                self.results.extend(local)

    def run_for(self, answers: int, timeout: float = 30) -> None:
        """Until the clients have had ``answers`` more answers: the load ran through this step."""
        with self.lock:
            target = self.answered + answers
        wait_until(
            lambda: self.answered >= target, timeout, message=lambda: f"the load stalled: {self.errors[:3]}"
        )

    def between(self, start: float, end: float) -> set[str | None]:
        """Versions that answered requests sent after ``start`` and answered before ``end``."""
        return {v for sent, done, _, v in self.results if sent > start and done < end}


def admin(server: ServerProcess, method: str, path: str, **kwargs: object) -> httpx.Response:
    response = httpx.request(method, f"{server.url}{path}", headers=AUTH, timeout=60, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 200, f"{method} {path}: {response.status_code} {response.text}"
    return response


def test_load_unload_and_weight_changes_under_load_lose_nothing(tmp_path: Path) -> None:
    repo = iris_repo(tmp_path / "repo", traffic={"weights": {1: 90, 2: 10}})
    model_dir = repo / "iris-xgb"
    with running_server(repo, tmp_path / "log", grpc=False, env=ENV) as server:
        load = Load(server)
        threads = [threading.Thread(target=load.run) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        marks: dict[str, float] = {}
        try:
            load.run_for(60)
            admin(server, "PUT", "/v2/models/iris-xgb/traffic", json={"weights": {"1": 50, "2": 50}})
            load.run_for(40)
            # a new version folder appears and is picked up by a re-read, warmed up first
            shutil.copytree(model_dir / "2", model_dir / "3")
            changes = admin(server, "POST", "/v2/repository/reload").json()
            assert changes["loaded"] == ["iris-xgb/3"], changes
            admin(server, "PUT", "/v2/models/iris-xgb/traffic", json={"weights": {"2": 50, "3": 50}})
            marks["only_2_3"] = time.monotonic()
            load.run_for(40)
            admin(
                server, "POST", "/v2/repository/models/iris-xgb/unload", json={"parameters": {"version": "1"}}
            )
            load.run_for(40)
            # reload the whole model: 1 comes back, 2 and 3 keep serving untouched
            rows = admin(server, "POST", "/v2/repository/models/iris-xgb/load").json()["versions"]
            assert {r["version"]: r["state"] for r in rows} == {"1": "READY", "2": "READY", "3": "READY"}
            admin(server, "PUT", "/v2/models/iris-xgb/traffic", json={"weights": {"3": 100}})
            marks["only_3"] = time.monotonic()
            load.run_for(40)
            admin(
                server, "POST", "/v2/repository/models/iris-xgb/unload", json={"parameters": {"version": "2"}}
            )
            admin(server, "POST", "/v2/repository/models/iris-xgb/unload", json={"version": 1})
            # back to config.yaml's 90/10: neither 1 nor 2 is READY, so the latest READY serves
            admin(server, "DELETE", "/v2/models/iris-xgb/traffic")
            marks["fallback"] = time.monotonic()
            load.run_for(60)
            marks["end"] = time.monotonic()
        finally:
            load.stop.set()
            for thread in threads:
                thread.join()
        pinned = httpx.post(
            f"{server.url}/v2/models/iris-xgb/versions/1/infer",
            json={"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [[1, 2, 3, 4]]}]},
        )
        index = httpx.get(f"{server.url}/v2/repository/index").json()
        log = server.log()

    assert not load.errors, load.errors[:5]
    assert len(load.results) > 200, "the client loop ran during the changes"
    assert load.between(marks["only_2_3"], marks["only_3"]) <= {"2", "3"}
    assert load.between(marks["only_3"], marks["end"]) == {"3"}
    assert {v for _, _, _, v in load.results} == {"1", "2", "3"}
    # an unloaded version says so, and why; the index tells the truth
    assert pinned.status_code == 503 and "UNAVAILABLE: unloaded by request" in pinned.json()["error"]
    assert {(r["version"], r["state"], r.get("reason")) for r in index} == {
        ("1", "UNAVAILABLE", "unloaded by request"),
        ("2", "UNAVAILABLE", "unloaded by request"),
        ("3", "READY", None),
    }
    assert "model iris-xgb version 3 ready (xgboost, load" in log and "warmup" in log


def test_a_broken_version_fails_to_load_with_its_reason_and_traffic_is_untouched(tmp_path: Path) -> None:
    repo = iris_repo(tmp_path / "repo", traffic={"weights": {1: 90, 2: 10}})
    (repo / "iris-xgb" / "4").mkdir()
    with running_server(repo, tmp_path / "log", grpc=False, env=ENV) as server:
        (repo / "iris-xgb" / "4" / "model.json").write_text("{ not a booster")
        response = httpx.post(
            f"{server.url}/v2/repository/models/iris-xgb/load",
            headers=AUTH,
            json={"parameters": {"version": "4"}},
        )
        assert response.status_code == 500
        assert "version 4 failed to load" in response.json()["error"]
        rows = {r["version"]: r for r in httpx.get(f"{server.url}/v2/repository/index").json()}
        assert rows["4"]["state"] == "FAILED" and "not a valid XGBoost model" in rows["4"]["reason"]
        assert httpx.get(f"{server.url}/v2/models/iris-xgb/versions/4/ready").status_code == 503
        meta = httpx.get(f"{server.url}/v2/models/iris-xgb/versions/4").json()
        assert meta["parameters"]["version_states"]["4"]["state"] == "FAILED"
        bad = httpx.put(
            f"{server.url}/v2/models/iris-xgb/traffic", headers=AUTH, json={"weights": {"4": 100}}
        )
        assert bad.status_code == 200  # FAILED is known: it simply gets no traffic
        client = Client(server.http_port)
        try:
            assert {client.infer()[:2] for _ in range(50)} == {(200, "2")}  # latest READY serves
        finally:
            client.close()


@pytest.mark.parametrize("poll", ["0.2"])
def test_polling_picks_up_a_new_version_folder_without_restart(tmp_path: Path, poll: str) -> None:
    repo = iris_repo(tmp_path / "repo")
    with running_server(
        repo, tmp_path / "log", grpc=False, env={**ENV, "SERVING_REPOSITORY_POLL_SECONDS": poll}
    ) as server:
        assert httpx.get(f"{server.url}/v2/models/iris-xgb/versions/3/ready").status_code == 404
        shutil.copytree(repo / "iris-xgb" / "1", repo / "iris-xgb" / "3")
        wait_until(
            lambda: httpx.get(f"{server.url}/v2/models/iris-xgb/versions/3/ready").status_code == 200,
            20,
            0.1,
            lambda: f"version 3 never became ready:\n{server.log()}",
        )
        # no weights: the latest READY version takes the traffic
        client = Client(server.http_port)
        try:
            assert {client.infer()[:2] for _ in range(20)} == {(200, "3")}
        finally:
            client.close()
        shutil.rmtree(repo / "iris-xgb" / "3")
        wait_until(
            lambda: httpx.get(f"{server.url}/v2/models/iris-xgb/versions/3/ready").status_code == 404,
            20,
            0.1,
            "version 3 was never unloaded after its folder went",
        )

"""One traffic policy for a fleet of real server processes sharing a store directory: two
single-process servers (one with the admin API on its own port) and one ``--workers 2``.
A change through any admin API reaches every process and worker, each reports the
generation it applies, a bad policy is refused everywhere with the reason, and a process
started later serves the current policy from its first ready moment."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from serving.control.policy import policy_file
from tests.server_process import ServerProcess, free_port, start_server, wait_until_ready
from tests.versions.conftest import AUTH, ENV, iris_repo

MODEL = "iris-xgb"
POLL = "0.1"


@dataclass
class Fleet:
    repo: Path
    store: Path
    logs: Path
    single: ServerProcess
    admin_port: int
    """``single`` serves model control only on this port."""
    other: ServerProcess
    workers: ServerProcess

    @property
    def servers(self) -> list[ServerProcess]:
        return [self.single, self.other, self.workers]


def start(
    fleet_repo: Path, store: Path, logs: Path, *args: str, wait_ready: bool = True, **env: str
) -> ServerProcess:
    full = {
        **ENV,
        "SERVING_TRAFFIC_POLICY_DIR": str(store),
        "SERVING_TRAFFIC_POLICY_POLL_SECONDS": POLL,
        **env,
    }
    return start_server(
        fleet_repo, logs, args=list(args), env=full, grpc=False, wait_ready=wait_ready, timeout=240
    )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("fleet")
    repo = iris_repo(root / "repo", traffic={"weights": {1: 90, 2: 10}})
    store = root / "store"
    store.mkdir()
    logs = root / "logs"
    admin_port = free_port()
    with contextlib.ExitStack() as stack:
        servers = []
        for args, env in (
            ((), {"SERVING_ADMIN_PORT": str(admin_port)}),
            ((), {}),
            (("--workers", "2"), {}),
        ):
            server = start(repo, store, logs, *args, wait_ready=False, **env)  # in parallel
            stack.callback(server.stop)
            servers.append(server)
        for server in servers:
            wait_until_ready(server, 240)
        yield Fleet(repo, store, logs, servers[0], admin_port, servers[1], servers[2])


def traffic(url: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/v2/models/{MODEL}/traffic", timeout=5)  # public read
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    return doc


def workers_traffic(server: ServerProcess, at_least: int = 2) -> dict[str, int]:
    """pid -> generation of every worker of a ``--workers N`` server."""
    deadline = time.monotonic() + 20
    while True:
        workers: dict[str, int] = traffic(server.url).get("workers", {})
        if len(workers) >= at_least or time.monotonic() > deadline:
            return workers
        time.sleep(0.1)


def wait_for_generation(fleet: Fleet, generation: int, timeout: float = 30) -> float:
    """Seconds until every process (and every worker) reports ``generation``."""
    began = time.monotonic()
    while True:
        lagging = [s.url for s in fleet.servers if traffic(s.url)["generation"] != generation]
        workers = workers_traffic(fleet.workers)
        lagging += [f"worker {pid}" for pid, g in workers.items() if g != generation]
        if not lagging:
            return time.monotonic() - began
        if time.monotonic() - began > timeout:
            raise AssertionError(f"not at generation {generation} after {timeout}s: {lagging}")
        time.sleep(0.05)


def put(url: str, body: Any) -> httpx.Response:
    return httpx.put(f"{url}/v2/models/{MODEL}/traffic", json=body, headers=AUTH, timeout=10)


def served_versions(url: str, n: int = 40) -> set[str]:
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}
    with httpx.Client(base_url=url, timeout=5) as client:
        return {
            client.post(f"/v2/models/{MODEL}/infer", json=body).headers["x-model-version"] for _ in range(n)
        }


def test_a_change_through_the_workers_admin_api_reaches_every_process(fleet: Fleet) -> None:
    start_gen = traffic(fleet.other.url)["generation"]
    # --workers 2 accepts the change (403 without a store): it goes to the store
    response = put(fleet.workers.url, {"weights": {"2": 100}, "stable_version": "2"})
    assert response.status_code == 200, response.text
    doc = response.json()
    generation = doc["generation"]
    assert generation == start_gen + 1 and doc["source"] == "store"
    assert doc["store"]["file"] == str(policy_file(fleet.store, MODEL))
    wait_for_generation(fleet, generation)
    for server in fleet.servers:
        assert traffic(server.url)["policy"]["weights"] == {"2": 100.0}
        assert served_versions(server.url) == {"2"}  # every connection, every worker
    # the metric says the same, per worker under --workers 2 (pid label)
    exposition = httpx.get(f"{fleet.workers.url}/metrics").text
    series = [
        line for line in exposition.splitlines() if line.startswith("serving_traffic_policy_generation{")
    ]
    assert len(series) == 2 and all(line.endswith(f" {generation}.0") for line in series), series
    # DELETE goes back to config.yaml's policy everywhere, as a new generation
    reset = httpx.delete(f"{fleet.other.url}/v2/models/{MODEL}/traffic", headers=AUTH, timeout=10)
    assert reset.status_code == 200 and reset.json()["generation"] == generation + 1
    wait_for_generation(fleet, generation + 1)
    assert {traffic(s.url)["source"] for s in fleet.servers} == {"config"}
    assert traffic(fleet.single.url)["policy"]["weights"] == {"1": 90.0, "2": 10.0}


def test_a_bad_policy_in_the_store_is_refused_by_every_process(fleet: Fleet) -> None:
    good = put(fleet.other.url, {"weights": {"1": 70, "2": 30}})
    assert good.status_code == 200
    generation = good.json()["generation"]
    wait_for_generation(fleet, generation)
    # someone writes a policy naming a version nobody has
    policy_file(fleet.store, MODEL).write_text(
        f'{{"generation": {generation + 1}, "traffic": {{"weights": {{"1": 50, "9": 50}}}}}}'
    )
    deadline = time.monotonic() + 30
    while any(traffic(s.url)["store"]["rejected"] is None for s in fleet.servers):
        assert time.monotonic() < deadline, [traffic(s.url)["store"] for s in fleet.servers]
        time.sleep(0.05)
    for server in fleet.servers:
        doc = traffic(server.url)
        assert doc["generation"] == generation  # the old one stays
        assert doc["policy"]["weights"] == {"1": 70.0, "2": 30.0}
        assert doc["store"]["rejected"]["generation"] == generation + 1
        assert "no loaded version 9" in doc["store"]["rejected"]["reason"]
        metrics = httpx.get(f"{server.url}/metrics").text
        assert any(
            line.startswith("serving_traffic_policy_rejected{") and line.endswith(" 1.0")
            for line in metrics.splitlines()
        )
        assert "no loaded version 9" in server.log()
    # a bad PUT never reaches the store
    bad = put(fleet.workers.url, {"weights": {"1": -1}})
    assert bad.status_code == 400 and "weight of version 1" in bad.json()["error"]
    fixed = put(fleet.workers.url, {"weights": {"1": 100}})
    assert fixed.status_code == 200
    wait_for_generation(fleet, fixed.json()["generation"])
    assert all(traffic(s.url)["store"]["rejected"] is None for s in fleet.servers)


def test_admin_routes_answer_only_on_the_admin_port(fleet: Fleet) -> None:
    inference = put(fleet.single.url, {"weights": {"1": 100}})
    assert inference.status_code == 404
    assert f"admin port ({fleet.admin_port})" in inference.json()["error"]
    for method, path in (("POST", "/v2/repository/reload"), ("DELETE", f"/v2/models/{MODEL}/traffic")):
        assert httpx.request(method, f"{fleet.single.url}{path}", headers=AUTH).status_code == 404
    admin_url = f"http://127.0.0.1:{fleet.admin_port}"
    assert put(admin_url, {"weights": {"1": 100}}).status_code == 200
    assert httpx.put(f"{admin_url}/v2/models/{MODEL}/traffic", json={"weights": {"1": 1}}).status_code == 401
    assert traffic(admin_url)["model"] == MODEL  # reads on both ports
    assert (
        httpx.post(f"{admin_url}/v2/models/{MODEL}/infer", json={}).status_code == 404
    )  # no inference there


def test_a_process_started_later_serves_the_current_policy_from_its_first_ready_moment(fleet: Fleet) -> None:
    current = put(fleet.workers.url, {"weights": {"2": 100}, "stable_version": "2"})
    assert current.status_code == 200
    generation = current.json()["generation"]
    late = start(fleet.repo, fleet.store, fleet.logs, "--workers", "2", wait_ready=False)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert late.proc.poll() is None, late.log()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{late.url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, late.log()
            time.sleep(0.02)
        # the very first answers after ready: the store's policy, never config.yaml's 90/10
        doc = traffic(late.url)
        assert doc["generation"] == generation and doc["policy"]["weights"] == {"2": 100.0}
        assert served_versions(late.url, 60) == {"2"}
        assert set(workers_traffic(late).values()) == {generation}
    finally:
        late.stop()


def test_without_a_store_dir_workers_follow_a_private_store(tmp_path: Path) -> None:
    """No SERVING_TRAFFIC_POLICY_DIR: the supervisor gives its workers a private store (issue 29;
    before, such a change was refused with 403), so a change is accepted and every worker applies
    it. tests/test_supervisor.py follows the store's life; this checks the fleet's view of it."""
    repo = iris_repo(tmp_path / "repo")
    server = start_server(repo, tmp_path / "logs", args=["--workers", "2"], env=ENV, grpc=False, timeout=240)
    try:
        response = put(server.url, {"weights": {"1": 100}})
        assert response.status_code == 200, response.text
        generation = response.json()["generation"]
        deadline = time.monotonic() + 30
        while set(workers_traffic(server).values()) != {generation}:
            assert time.monotonic() < deadline, traffic(server.url)
            time.sleep(0.2)
        store = traffic(server.url)["store"]["file"]
        assert Path(store).parent.name.startswith("serving-policies-"), store
        assert served_versions(server.url, 20) == {"1"}
    finally:
        server.stop()

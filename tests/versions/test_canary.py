"""Canary routing through the real server: 90/10 split, sticky keys, pins, response labels."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import numpy as np
import orjson
import xgboost as xgb

from tests.server_process import DEMO_REPO, ServerProcess
from tests.versions.conftest import AUTH, ROW, Client

REQUESTS = 20_000
THREADS = 4


def test_20k_requests_split_90_10_within_two_points(canary_server: ServerProcess) -> None:
    counts: Counter[tuple[int, str | None, str | None]] = Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + 120

    def work(n: int) -> None:
        client = Client(canary_server.http_port)
        local: Counter[tuple[int, str | None, str | None]] = Counter()
        try:
            for _ in range(n):
                if time.monotonic() > deadline:
                    break
                status, version, variant, _ = client.infer()
                local[(status, version, variant)] += 1
        finally:
            client.close()
            with lock:
                counts.update(local)

    threads = [threading.Thread(target=work, args=(REQUESTS // THREADS,)) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(counts.values()) == REQUESTS, counts
    # every answer is a 200 labelled with its version; version 1 is stable, 2 the canary
    assert set(counts) == {(200, "1", "stable"), (200, "2", "canary")}, counts
    canary_share = counts[(200, "2", "canary")] / REQUESTS
    assert abs(canary_share - 0.10) < 0.02, counts
    metrics = httpx.get(f"{canary_server.url}/metrics").text
    assert 'variant="canary",version="2"' in metrics and 'variant="stable",version="1"' in metrics


def test_response_names_the_version_and_matches_its_booster(canary_server: ServerProcess) -> None:
    client = Client(canary_server.http_port)
    try:
        seen: dict[str, list[float]] = {}
        for i in range(200):
            status, version, _, body = client.infer()
            assert status == 200
            doc = orjson.loads(body)
            assert doc["model_version"] == version
            seen.setdefault(str(version), doc["outputs"][0]["data"])
            if len(seen) == 2 and i > 20:
                break
    finally:
        client.close()
    assert set(seen) == {"1", "2"}
    for version, data in seen.items():
        booster = xgb.Booster(model_file=str(DEMO_REPO / "iris-xgb" / version / "model.json"))
        expected = booster.inplace_predict(np.array([ROW], dtype=np.float32))
        np.testing.assert_allclose(np.array(data).reshape(1, 3), expected, rtol=1e-6)


def sticky_versions(server: ServerProcess, keys: list[str], by: str = "header") -> dict[str, str]:
    client = Client(server.http_port)
    placed: dict[str, str] = {}
    try:
        for key in keys:
            if by == "header":
                status, version, _, _ = client.infer(headers={"x-routing-key": key})
            else:
                body = orjson.dumps(
                    {
                        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [ROW]}],
                        "parameters": {"routing_key": key},
                    }
                )
                status, version, _, _ = client.infer(body)
            assert status == 200 and version is not None
            placed[key] = version
    finally:
        client.close()
    return placed


def test_sticky_keys_stay_put_and_move_only_onto_a_growing_canary(canary_server: ServerProcess) -> None:
    keys = [f"user-{i}" for i in range(400)]
    first = sticky_versions(canary_server, keys)
    assert set(first.values()) == {"1", "2"}
    for _ in range(2):
        assert sticky_versions(canary_server, keys) == first
    # the request parameter routing_key places a key exactly as the header does
    assert sticky_versions(canary_server, keys[:100], by="parameter") == {k: first[k] for k in keys[:100]}
    try:
        response = httpx.put(
            f"{canary_server.url}/v2/models/iris-xgb/traffic",
            headers=AUTH,
            json={"weights": {"1": 80, "2": 20}},
        )
        assert response.status_code == 200, response.text
        assert response.json()["effective"]["shares"] == {"1": 0.8, "2": 0.2}
        after = sticky_versions(canary_server, keys)
    finally:
        httpx.delete(f"{canary_server.url}/v2/models/iris-xgb/traffic", headers=AUTH)
    moved = [k for k in keys if after[k] != first[k]]
    assert moved, "raising the canary to 20 % moves some keys onto it"
    assert all(first[k] == "1" and after[k] == "2" for k in moved)
    assert len(moved) < 0.2 * len(keys)
    assert sticky_versions(canary_server, keys) == first  # back to 90/10: back where they were


def test_pin_always_wins(canary_server: ServerProcess) -> None:
    client = Client(canary_server.http_port)
    try:
        for version in ("1", "2"):
            answers = {
                client.infer(
                    path=f"/v2/models/iris-xgb/versions/{version}/infer", headers={"x-routing-key": k}
                )[:3]
                for k in ("a", "b", "c", "d")
            }
            variant = "stable" if version == "1" else "canary"
            assert answers == {(200, version, variant)}
        status, _, _, body = client.infer(path="/v2/models/iris-xgb/versions/7/infer")
        assert status == 404 and b"Request for unknown model: 'iris-xgb' version '7' is not found" in body
    finally:
        client.close()

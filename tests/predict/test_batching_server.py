"""Batching end to end: the real server with ``batching.enabled`` in a model config."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import xgboost as xgb

from tests.predict.models import N_FEATURES, write_xgb_model
from tests.server_process import running_server

ROW_COUNTS = [1, 4, 2, 3, 1, 5, 2, 1]


def _body(x: np.ndarray) -> dict[str, object]:
    return {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]
    }


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and 'model="tiny-xgb"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_batched_server_answers_each_request_exactly(tmp_path: Path) -> None:
    model_dir = write_xgb_model(tmp_path / "repo", batching={"enabled": True, "max_queue_delay_us": 100_000})
    booster = xgb.Booster(model_file=str(model_dir / "1" / "model.json"))
    rng = np.random.default_rng(1)
    requests = [rng.normal(size=(n, N_FEATURES)).astype(np.float32) for n in ROW_COUNTS]

    async def send_all(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            return await asyncio.gather(
                *(client.post("/v2/models/tiny-xgb/infer", json=_body(x)) for x in requests)
            )

    with running_server(tmp_path / "repo", tmp_path / "logs", grpc=False) as server:
        responses = asyncio.run(send_all(server.url))
        metrics = httpx.get(f"{server.url}/metrics").text
    for x, response in zip(requests, responses, strict=True):
        assert response.status_code == 200, response.text
        (output,) = response.json()["outputs"]
        assert output["shape"] == [len(x), 3]
        got = np.array(output["data"], dtype=np.float32).reshape(len(x), 3)
        np.testing.assert_allclose(got, booster.inplace_predict(x), rtol=1e-6)
    assert _metric(metrics, "serving_batch_size_sum") == sum(ROW_COUNTS)
    # with a 100 ms window, 8 concurrent requests share far fewer runtime calls
    assert _metric(metrics, "serving_batch_size_count") < len(ROW_COUNTS)


def test_full_queue_answers_503_with_retry_after(tmp_path: Path) -> None:
    write_xgb_model(
        tmp_path / "repo",
        batching={"enabled": True, "max_queue_delay_us": 500_000, "max_queue_size": 1, "max_batch_size": 64},
    )
    x = np.zeros((1, N_FEATURES), dtype=np.float32)

    async def send_all(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            return await asyncio.gather(
                *(client.post("/v2/models/tiny-xgb/infer", json=_body(x)) for _ in range(4))
            )

    with running_server(tmp_path / "repo", tmp_path / "logs", grpc=False) as server:
        responses = asyncio.run(send_all(server.url))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) >= 1 and 503 in statuses, statuses
    rejected = next(r for r in responses if r.status_code == 503)
    assert rejected.headers["retry-after"] == "1"
    assert "max_queue_size 1" in rejected.json()["error"]

"""Payload logging end to end: a real server sends CloudEvents to a real HTTP sink (parsed
with the cloudevents SDK) and to local files; a sink that is down or slow changes no
response under load, and the drops are counted."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from cloudevents.http import from_json

from tests.observability.receivers import Received, cloudevents_sink
from tests.server_process import free_port, running_server
from tests.tinymodels import identity_onnx, spec, write_config

REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"


def _model(root: Path, name: str, **extra: object) -> None:
    write_config(
        root / name,
        {
            "platform": "onnx",
            "inputs": [spec("x", "FP32", [-1, 3])],
            "outputs": [spec("y", "FP32", [-1, 3])],
            **extra,
        },
    )
    (root / name / "1").mkdir(parents=True, exist_ok=True)
    (root / name / "1" / "model.onnx").write_bytes(identity_onnx("FP32", 3))


def _repo(root: Path) -> Path:
    _model(root, "ident")
    _model(root, "secret", payload_logging={"log_inputs": False})
    _model(root, "quiet", payload_logging={"sample_rate": 0.0})
    return root


def _body(request_id: str, rows: int = 2) -> dict[str, Any]:
    data = (np.arange(rows * 3, dtype=np.float32) / 4).tolist()
    return {"id": request_id, "inputs": [{"name": "x", "datatype": "FP32", "shape": [rows, 3], "data": data}]}


def _events(received: Received, event_id: str) -> dict[str, Any]:
    with received.lock:
        return {e["type"]: e for e in received.events if e["id"] == event_id}


def test_sampled_payloads_arrive_as_cloudevents_and_in_files(tmp_path: Path) -> None:
    files = tmp_path / "payloads"
    with cloudevents_sink() as (url, received):
        env = {
            "SERVING_PAYLOAD_LOG_URL": url,
            "SERVING_PAYLOAD_LOG_DIR": str(files),
            "SERVING_PAYLOAD_LOG_SAMPLE_RATE": "1",
            "SERVING_PAYLOAD_LOG_INFERENCE_SERVICE": "fraud",
            "SERVING_PAYLOAD_LOG_NAMESPACE": "models",
        }
        with running_server(_repo(tmp_path / "repo"), tmp_path / "logs", env=env) as server:
            sent = _body("req-1")
            reply = httpx.post(f"{server.url}/v2/models/ident/infer", json=sent)
            assert reply.status_code == 200
            received.wait_for(lambda r: len(_events(r, "req-1")) == 2)
            events = _events(received, "req-1")
            request, response = events[REQUEST], events[RESPONSE]
            for event in (request, response):
                assert event["specversion"] == "1.0"
                assert event["inferenceservicename"] == "fraud"
                assert event["namespace"] == "models"
                assert event["component"] == "predictor"
                assert event["endpoint"] == "default"
                assert event["modelname"] == "ident"
                assert event["modelversion"] == "1"
                assert event["variant"] == "stable"
                assert event["protocol"] == "rest"
            assert request.data["inputs"] == sent["inputs"]
            assert response.data["outputs"] == reply.json()["outputs"]
            assert response.data["model_version"] == "1"
            assert int(response["latencyus"]) > 0
            assert request["time"] <= response["time"]

            # gRPC, with the caller's id
            client = grpcclient.InferenceServerClient(server.grpc_target)
            data = np.full((1, 3), 0.5, dtype=np.float32)
            inputs = [grpcclient.InferInput("x", [1, 3], "FP32")]
            inputs[0].set_data_from_numpy(data)
            client.infer("ident", inputs, request_id="grpc-1")
            client.close()
            received.wait_for(lambda r: len(_events(r, "grpc-1")) == 2)
            grpc_events = _events(received, "grpc-1")
            assert grpc_events[REQUEST]["protocol"] == "grpc"
            assert grpc_events[REQUEST].data["inputs"][0]["data"] == [0.5, 0.5, 0.5]
            assert grpc_events[RESPONSE].data["outputs"][0]["data"] == [0.5, 0.5, 0.5]

            # log_inputs: false sends the response only; sample_rate 0 sends nothing
            assert httpx.post(f"{server.url}/v2/models/secret/infer", json=_body("sec-1")).status_code == 200
            assert httpx.post(f"{server.url}/v2/models/quiet/infer", json=_body("q-1")).status_code == 200
            assert httpx.post(f"{server.url}/v2/models/ident/infer", json=_body("last")).status_code == 200
            received.wait_for(lambda r: len(_events(r, "last")) == 2)
            assert set(_events(received, "sec-1")) == {RESPONSE}
            assert _events(received, "q-1") == {}
            metrics = httpx.get(f"{server.url}/metrics").text
            assert 'serving_payload_events_sent_total{sink="http"} 7.0' in metrics

    # the same events, structured mode, one per line
    lines = [
        line for path in sorted(files.glob("payloads-*.jsonl")) for line in path.read_bytes().splitlines()
    ]
    in_file = [from_json(line) for line in lines]
    assert {(e["id"], e["type"]) for e in in_file} == {
        ("req-1", REQUEST), ("req-1", RESPONSE), ("grpc-1", REQUEST), ("grpc-1", RESPONSE),
        ("sec-1", RESPONSE), ("last", REQUEST), ("last", RESPONSE),
    }  # fmt: skip
    first = next(e for e in in_file if e["id"] == "req-1" and e["type"] == REQUEST)
    assert first.data["inputs"] == sent["inputs"]


def test_sticky_sampling_by_key_logs_a_caller_all_or_nothing(tmp_path: Path) -> None:
    with cloudevents_sink() as (url, received):
        env = {
            "SERVING_PAYLOAD_LOG_URL": url,
            "SERVING_PAYLOAD_LOG_SAMPLE_RATE": "0.5",
            "SERVING_PAYLOAD_LOG_BY": "key",
        }
        repo = _repo(tmp_path / "repo")
        _model(repo, "always", payload_logging={"sample_rate": 1.0})
        with running_server(repo, tmp_path / "logs", env=env, grpc=False) as server:
            keys = [f"user-{i}" for i in range(12)]
            for round_ in range(3):
                for key in keys:
                    reply = httpx.post(
                        f"{server.url}/v2/models/ident/infer",
                        json=_body(f"{key}-{round_}"),
                        headers={"x-routing-key": key},
                    )
                    assert reply.status_code == 200
            # One sender thread sends the events in order: once the marker's arrive (its model
            # logs every request), every event of the requests before it has arrived too.
            assert httpx.post(f"{server.url}/v2/models/always/infer", json=_body("marker")).status_code == 200
            received.wait_for(lambda r: len(_events(r, "marker")) == 2)
    with received.lock:
        logged = {e["id"].rsplit("-", 1)[0] for e in received.events if e["id"] != "marker"}
        counts = {
            key: sum(e["id"].startswith(key + "-") and e["type"] == RESPONSE for e in received.events)
            for key in keys
        }
    assert 0 < len(logged) < len(keys), "a share of the callers, not all or none"
    assert all(counts[key] in (0, 3) for key in keys), counts


async def _load(
    url: str, requests: int, concurrency: int
) -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def one(i: int) -> tuple[int, dict[str, Any], dict[str, Any]]:
            body = _body(f"load-{i}", rows=1 + i % 4)
            async with sem:
                reply = await client.post("/v2/models/ident/infer", json=body)
            return reply.status_code, body, reply.json()

        return await asyncio.gather(*(one(i) for i in range(requests)))


def _check_answers(results: list[tuple[int, dict[str, Any], dict[str, Any]]]) -> None:
    for status, body, answer in results:
        assert status == 200, answer
        assert answer["id"] == body["id"]
        assert answer["model_version"] == "1"
        [output] = answer["outputs"]
        assert output["shape"] == body["inputs"][0]["shape"]
        assert output["data"] == body["inputs"][0]["data"]


def _counter(metrics: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith(name + "{"))


@pytest.mark.parametrize("sink", ["down", "slow"])
def test_a_sink_down_or_slow_changes_no_response_under_load(tmp_path: Path, sink: str) -> None:
    env = {
        "SERVING_PAYLOAD_LOG_SAMPLE_RATE": "1",
        "SERVING_PAYLOAD_LOG_QUEUE_SIZE": "20",
        "SERVING_PAYLOAD_LOG_BATCH_SIZE": "4",
        "SERVING_PAYLOAD_LOG_RETRIES": "2",
        "SERVING_PAYLOAD_LOG_BACKOFF_SECONDS": "0.05",
        "SERVING_PAYLOAD_LOG_TIMEOUT_SECONDS": "0.5",
    }
    with cloudevents_sink(delay=0.2) as (slow_url, received):
        env["SERVING_PAYLOAD_LOG_URL"] = slow_url if sink == "slow" else f"http://127.0.0.1:{free_port()}/"
        with running_server(_repo(tmp_path / "repo"), tmp_path / "logs", env=env, grpc=False) as server:
            began = time.monotonic()
            results = asyncio.run(_load(server.url, 400, 32))
            _check_answers(results)
            metrics = httpx.get(f"{server.url}/metrics").text
            log = server.log()
            elapsed = time.monotonic() - began
    assert _counter(metrics, "serving_payload_events_dropped_total") > 0
    assert 'reason="queue_full"' in metrics
    if sink == "down":
        assert _counter(metrics, "serving_payload_sink_errors_total") > 0
        # every failed attempt is counted, but logged at a bounded rate
        lines = log.count("payload sink")
        assert 1 <= lines <= 2 + elapsed / 10, log  # one line per 10 s at most
        assert _counter(metrics, "serving_payload_sink_errors_total") > lines
    else:
        assert len(received.events) > 0  # the slow sink still gets what fits

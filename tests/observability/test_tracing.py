"""Tracing end to end: a real server exports spans over real OTLP/HTTP to a receiver that
decodes them with opentelemetry-proto; real REST (httpx) and gRPC (tritonclient) clients
send W3C trace context."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.observability.receivers import Received, ReceivedSpan, otlp_receiver
from tests.server_process import ServerProcess, running_server
from tests.tinymodels import identity_onnx, spec, write_config

SERVER = 2  # opentelemetry.proto.trace.v1.Span.SpanKind.SPAN_KIND_SERVER
STATUS_ERROR = 2
STEPS = {"decode", "routing", "queue wait", "compute", "encode"}


def _model(root: Path, name: str, versions: tuple[str, ...] = ("1",), **extra: object) -> None:
    write_config(
        root / name,
        {
            "platform": "onnx",
            "inputs": [spec("x", "FP32", [-1, 3])],
            "outputs": [spec("y", "FP32", [-1, 3])],
            **extra,
        },
    )
    for version in versions:
        (root / name / version).mkdir(parents=True, exist_ok=True)
        (root / name / version / "model.onnx").write_bytes(identity_onnx("FP32", 3))


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Received]]:
    root = tmp_path_factory.mktemp("repo")
    _model(
        root,
        "ident",
        ("1", "2"),
        version_policy={"all": True},
        traffic={"weights": {"1": 1}, "shadow_version": "2", "shadow_fraction": 1.0},
    )
    _model(root, "batched", batching={"enabled": True, "max_queue_delay_us": 300_000, "max_batch_size": 64})
    with otlp_receiver() as (endpoint, received):
        env = {
            "SERVING_TRACING": "true",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_SERVICE_NAME": "serving-under-test",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
            "SERVING_INLINE_PREDICT_US": "0",  # every call through the pool: a queue wait span
        }
        with running_server(root, tmp_path_factory.mktemp("logs"), env=env) as server:
            yield server, received


def _traceparent(sampled: bool = True) -> tuple[str, str, str]:
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, parent, f"00-{trace_id}-{parent}-{'01' if sampled else '00'}"


def _body(rows: int = 2) -> dict[str, object]:
    data = np.arange(rows * 3, dtype=np.float32).tolist()
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [rows, 3], "data": data}]}


def _server_span(received: Received, trace_id: str, name: str) -> ReceivedSpan:
    received.wait_for(lambda r: any(s.trace_id == trace_id and s.kind == SERVER for s in r.spans))
    [span] = [s for s in received.trace(trace_id) if s.kind == SERVER]
    assert span.name == name
    return span


def _children(received: Received, span: ReceivedSpan) -> dict[str, ReceivedSpan]:
    received.wait_for(
        lambda r: {s.name for s in r.trace(span.trace_id) if s.parent_id == span.span_id} >= STEPS
    )
    children = [s for s in received.trace(span.trace_id) if s.parent_id == span.span_id and s.name in STEPS]
    for child in children:  # inside the server span (a shadow copy runs after the answer)
        assert span.start <= child.start <= child.end <= span.end, child.name
    return {c.name: c for c in children}


def test_rest_request_continues_the_callers_trace(traced: tuple[ServerProcess, Received]) -> None:
    server, received = traced
    trace_id, parent, traceparent = _traceparent()
    reply = httpx.post(
        f"{server.url}/v2/models/ident/infer",
        json=_body(2),
        headers={"traceparent": traceparent, "tracestate": "vendor=abc"},
    )
    assert reply.status_code == 200
    span = _server_span(received, trace_id, "rest infer ident")
    assert span.parent_id == parent
    assert span.trace_state == "vendor=abc"
    assert span.attributes["serving.model"] == "ident"
    assert span.attributes["serving.model.version"] == "1"
    assert span.attributes["serving.variant"] == "stable"
    assert span.attributes["serving.rows"] == 2
    assert span.attributes["serving.outcome"] == "2xx"
    assert span.attributes["http.request.method"] == "POST"
    assert span.attributes["http.route"] == "/v2/models/{model}/infer"
    assert span.attributes["http.response.status_code"] == 200
    assert "error.type" not in span.attributes
    assert span.resource["service.name"] == "serving-under-test"
    assert span.resource["deployment.environment"] == "test"
    steps = _children(received, span)
    assert set(steps) >= STEPS
    order = ["decode", "routing", "queue wait", "compute", "encode"]
    starts = [steps[name].start for name in order]
    assert starts == sorted(starts)
    assert steps["compute"].attributes["serving.scoring.rows"] == 2
    # the shadow copy: its own span in the trace, linked to the primary
    received.wait_for(lambda r: any(s.name == "shadow ident" for s in r.trace(trace_id)))
    [shadow] = [s for s in received.trace(trace_id) if s.name == "shadow ident"]
    assert (trace_id, span.span_id) in shadow.links
    assert shadow.attributes["serving.model.version"] == "2"
    assert shadow.attributes["serving.variant"] == "shadow"
    assert shadow.attributes["serving.core.shadow.result"] == "match"


def test_grpc_request_continues_the_callers_trace(traced: tuple[ServerProcess, Received]) -> None:
    server, received = traced
    trace_id, parent, traceparent = _traceparent()
    client = grpcclient.InferenceServerClient(server.grpc_target)
    data = np.ones((3, 3), dtype=np.float32)
    inputs = [grpcclient.InferInput("x", [3, 3], "FP32")]
    inputs[0].set_data_from_numpy(data)
    result = client.infer("ident", inputs, headers={"traceparent": traceparent})
    np.testing.assert_array_equal(result.as_numpy("y"), data)
    client.close()
    span = _server_span(received, trace_id, "grpc infer ident")
    assert span.parent_id == parent
    assert span.attributes["rpc.system"] == "grpc"
    assert span.attributes["rpc.service"] == "inference.GRPCInferenceService"
    assert span.attributes["rpc.method"] == "ModelInfer"
    assert span.attributes["rpc.grpc.status_code"] == 0
    assert span.attributes["serving.outcome"] == "OK"
    assert span.attributes["serving.rows"] == 3
    assert set(_children(received, span)) >= STEPS


def test_errors_carry_outcome_and_error_class(traced: tuple[ServerProcess, Received]) -> None:
    server, received = traced
    trace_id, _, traceparent = _traceparent()
    bad = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    reply = httpx.post(f"{server.url}/v2/models/ident/infer", json=bad, headers={"traceparent": traceparent})
    assert reply.status_code == 400
    span = _server_span(received, trace_id, "rest infer ident")
    assert span.attributes["serving.outcome"] == "4xx"
    assert span.attributes["error.type"] == "InvalidInput"
    assert span.attributes["http.response.status_code"] == 400
    assert span.status_code != STATUS_ERROR  # a client's mistake is not the server's error

    trace_id, _, traceparent = _traceparent()
    reply = httpx.post(
        f"{server.url}/v2/models/nope/infer", json=_body(), headers={"traceparent": traceparent}
    )
    assert reply.status_code == 404
    span = _server_span(received, trace_id, "rest infer <unknown>")
    assert span.attributes["error.type"] == "ModelNotFound"


def test_the_callers_sampling_decision_is_honoured(traced: tuple[ServerProcess, Received]) -> None:
    server, received = traced
    dropped, _, unsampled = _traceparent(sampled=False)
    kept, _, sampled = _traceparent(sampled=True)
    for traceparent in (unsampled, sampled):
        reply = httpx.post(
            f"{server.url}/v2/models/ident/infer", json=_body(), headers={"traceparent": traceparent}
        )
        assert reply.status_code == 200
    _children(received, _server_span(received, kept, "rest infer ident"))
    assert received.trace(dropped) == []


def test_a_batch_is_one_compute_span_linked_with_each_request(traced: tuple[ServerProcess, Received]) -> None:
    server, received = traced
    ids = [_traceparent() for _ in range(3)]

    async def send() -> None:
        async with httpx.AsyncClient(base_url=server.url) as client:
            replies = await asyncio.gather(
                *(
                    client.post("/v2/models/batched/infer", json=_body(1), headers={"traceparent": tp})
                    for _, _, tp in ids
                )
            )
        assert [r.status_code for r in replies] == [200, 200, 200]

    asyncio.run(send())
    servers = [_server_span(received, trace_id, "rest infer batched") for trace_id, _, _ in ids]
    received.wait_for(
        lambda r: sum(s.name == "compute" and s.trace_id in {t for t, _, _ in ids} for s in r.spans) >= 1
    )
    computes = [s for trace_id, _, _ in ids for s in received.trace(trace_id) if s.name == "compute"]
    assert len(computes) == 1, "one compute span per batch"
    [compute] = computes
    assert compute.attributes["serving.scoring.requests"] == 3
    assert compute.attributes["serving.scoring.rows"] == 3
    owner = next(s for s in servers if s.trace_id == compute.trace_id)
    assert compute.parent_id == owner.span_id
    others = {(s.trace_id, s.span_id) for s in servers if s is not owner}
    assert set(compute.links) == others

    def has_queue_wait(trace_id: str) -> Callable[[Received], bool]:
        return lambda r: any(s.name == "queue wait" for s in r.trace(trace_id))

    for span in servers:  # every request's queue wait links to the batch
        received.wait_for(has_queue_wait(span.trace_id))
        [wait] = [s for s in received.trace(span.trace_id) if s.name == "queue wait"]
        assert wait.parent_id == span.span_id
        assert (compute.trace_id, compute.span_id) in wait.links


def test_off_by_default_without_loading_the_sdk(tmp_path: Path) -> None:
    """Tracing and payload logging off: neither our modules nor the OpenTelemetry SDK or
    exporter are imported (FastAPI itself imports the OpenTelemetry API; that is not ours)."""
    _model(tmp_path, "ident")
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from serving.server import build, load_models\n"
        "from serving.settings import Settings\n"
        "import serving.protocol.grpc.server\n"
        f"parts = build(Settings(model_repo=Path({str(tmp_path)!r})))\n"
        "load_models(parts)\n"
        "assert parts.dataplane.tracing is None and parts.dataplane.payloads is None\n"
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk', 'opentelemetry.exporter', "
        "'serving.observability.tracing', 'serving.observability.payloads'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_an_unsupported_otlp_protocol_is_one_clear_startup_error(tmp_path: Path) -> None:
    _model(tmp_path / "repo", "ident")
    env = {**os.environ, "SERVING_TRACING": "true", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "serving.cli",
            "serve",
            "--model-repo",
            str(tmp_path / "repo"),
            "--http-port",
            "0",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode != 0
    assert "OTLP protocol 'http/json' is not supported" in out.stderr
    assert "Traceback" not in out.stderr

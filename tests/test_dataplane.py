"""``DataPlane.infer`` and its steps (route, validate, admit, predict, shape outputs), called
directly: no server, no protocol. The dataplane raises typed errors and returns results; it
counts no requests (the adapters do, tests/protocol/test_edge.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from serving.errors import (
    DeadlineExceeded,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    RuntimeFault,
)
from serving.inference import InferenceRequest, RequestedOutput, Tensor
from serving.server import Components, build, load_models
from serving.settings import Settings
from tests.reliability.models import write_good_model

ROW = np.array([[1, 2, 3, 4]], dtype=np.float32)


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[Components]:
    write_good_model(tmp_path / "repo")
    settings = Settings(model_repo=tmp_path / "repo", grpc_port=-1, max_inflight=1, predict_threads=1)
    built = build(settings)
    load_models(built)
    yield built
    built.executor.shutdown()


def request(data: np.ndarray = ROW, **kwargs: object) -> InferenceRequest:
    return InferenceRequest("good", None, [Tensor("x", "FP32", data.shape, data)], **kwargs)  # type: ignore[arg-type]


def test_infer_returns_the_outputs_and_counts_no_request(parts: Components) -> None:
    response = asyncio.run(parts.dataplane.infer(request(id="r1")))
    assert (response.model, response.version, response.variant, response.id) == ("good", "1", "stable", "r1")
    np.testing.assert_array_equal(response.outputs[0].data, ROW)
    assert b"serving_requests_total{" not in parts.metrics.exposition()  # the adapter's job


def test_unknown_model_and_version_are_model_not_found(parts: Components) -> None:
    with pytest.raises(ModelNotFound):
        asyncio.run(parts.dataplane.infer(InferenceRequest("nope", None, [])))
    with pytest.raises(ModelNotFound):
        parts.dataplane.check_model("good", "7")
    with pytest.raises(ModelNotFound):
        parts.dataplane.check_model("nope")
    parts.dataplane.check_model("good", "1")


def test_route_records_the_chosen_version_on_the_request(parts: Components) -> None:
    req = request()
    route = parts.dataplane.route(parts.repository.models["good"], req)
    assert (route.entry.version, req.served_version, req.variant) == ("1", "1", "stable")


def test_an_invalid_request_is_one_rejection_and_names_the_problem(parts: Components) -> None:
    entry = parts.repository.models["good"].versions["1"]
    bad = request(np.zeros((1, 5), dtype=np.float32))
    with pytest.raises(InvalidInput, match="shape"):
        parts.dataplane.validate(entry, bad)  # a step alone counts nothing: infer records it
    assert b"serving_rejections_total{" not in parts.metrics.exposition()
    with pytest.raises(InvalidInput, match="shape"):
        asyncio.run(parts.dataplane.infer(bad))
    assert b'serving_rejections_total{model="good",reason="invalid"} 1.0' in parts.metrics.exposition()


class _Refusing:
    """A predict stage that refuses, as a full batcher queue or a late pool thread does."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def predict(self, inputs: object, deadline: object, trace: object = None) -> object:
        raise self.error

    async def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (Overloaded("queue full"), "overload"),
        (DeadlineExceeded("late"), "deadline"),
        (RuntimeFault("boom"), None),
    ],
)
def test_a_refusal_from_any_stage_is_counted_once_by_the_dataplane(
    parts: Components, error: Exception, reason: str | None
) -> None:
    """Rejections are recorded in one place (DataPlane.infer), from the error table's reason,
    whichever stage raised: the count is one per refused request, and a fault is no refusal."""
    entry = parts.repository.models["good"].versions["1"]
    entry.predictor = _Refusing(error)  # type: ignore[assignment]
    with pytest.raises(type(error)):
        asyncio.run(parts.dataplane.infer(request()))
    text = parts.metrics.exposition().decode()
    counted = [line for line in text.splitlines() if line.startswith("serving_rejections_total{")]
    assert counted == ([f'serving_rejections_total{{model="good",reason="{reason}"}} 1.0'] if reason else [])


def test_admit_refuses_a_passed_deadline_a_full_version_and_a_missing_stage(parts: Components) -> None:
    entry = parts.repository.models["good"].versions["1"]
    with pytest.raises(DeadlineExceeded):
        parts.dataplane.admit(entry, request(deadline=time.monotonic() - 1))
    entry.inflight = 1  # max_inflight 1
    with pytest.raises(Overloaded, match="max_inflight 1"):
        parts.dataplane.admit(entry, request())
    entry.inflight = 0
    assert parts.dataplane.admit(entry, request()) is entry.predictor
    predictor, entry.predictor = entry.predictor, None
    with pytest.raises(ModelNotReady):
        parts.dataplane.admit(entry, request())
    entry.predictor = predictor


def test_predict_turns_a_runtime_exception_into_a_runtime_fault(parts: Components) -> None:
    entry = parts.repository.models["good"].versions["1"]

    class Broken:
        async def predict(self, inputs: object, deadline: object) -> None:
            raise ValueError("boom\nC++ backtrace that must not reach the client")

    with pytest.raises(RuntimeFault, match=r"'good' version 1 failed: ValueError: boom$"):
        asyncio.run(parts.dataplane.predict(entry, Broken(), {"x": ROW}, None))  # type: ignore[arg-type]
    assert entry.inflight == 0


def test_shape_outputs_keeps_the_requested_outputs_in_config_order(parts: Components) -> None:
    entry = parts.repository.models["good"].versions["1"]
    results = {"y": ROW.astype(np.float64)}
    response = parts.dataplane.shape_outputs(
        entry, request(outputs=[RequestedOutput("y")]), results, "canary"
    )
    assert response.variant == "canary" and response.outputs[0].data.dtype == np.float32
    none = parts.dataplane.shape_outputs(
        entry, request(outputs=[RequestedOutput("other")]), results, "stable"
    )
    assert none.outputs == []

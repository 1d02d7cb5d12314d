"""Triton's example clients' calls against the real server, on Triton's example models.

Each test makes the calls one of Triton's ``src/python/examples/simple_*`` clients makes
(triton-inference-server/client), with the same arguments, and checks what that client
checks, plus what it only prints. One of the examples' checks is left out, as the issue
allows: that the server calls itself "triton". An unknown model is answered 404 / NOT_FOUND
in Triton's words ("Request for unknown model: 'x' is not found"), which the examples match.
"""

from __future__ import annotations

import asyncio
import queue
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio
from tritonclient.utils import InferenceServerException

from tests.server_process import ServerProcess, running_server
from tests.triton.models import write_triton_examples
from tests.waiting import wait_until

SLOW_MS = 1500  # the fault-injected latency of the "slow" copy of "simple"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = write_triton_examples(tmp_path_factory.mktemp("triton-repo"))
    # "slow": "simple" again, with injected latency, for stream deadlines and cancellation.
    slow = repo / "slow"
    slow.mkdir()
    (slow / "config.yaml").write_text((repo / "simple" / "config.yaml").read_text())
    (slow / "1").mkdir()
    (slow / "1" / "model.onnx").write_bytes((repo / "simple" / "1" / "model.onnx").read_bytes())
    env = {"SERVING_FAULT_TARGET": "slow:1", "SERVING_FAULT_LATENCY_MS": str(SLOW_MS)}
    with running_server(repo, tmp_path_factory.mktemp("triton-logs"), env=env) as started:
        yield started


def simple_data() -> tuple[np.ndarray, np.ndarray]:
    input0 = np.expand_dims(np.arange(0, 16, dtype=np.int32), axis=0)
    return input0, np.ones(shape=(1, 16), dtype=np.int32)


def check_sum_and_difference(result: Any, input0: np.ndarray, input1: np.ndarray) -> None:
    """What every ``simple`` example checks, element by element."""
    output0, output1 = result.as_numpy("OUTPUT0"), result.as_numpy("OUTPUT1")
    assert output0.dtype == np.int32 and output0.shape == (1, 16)
    for i in range(16):
        assert input0[0][i] + input1[0][i] == output0[0][i], "incorrect sum"
        assert input0[0][i] - input1[0][i] == output1[0][i], "incorrect difference"


# -- HTTP ------------------------------------------------------------------------------------


def http_inputs(lib: Any, input0: np.ndarray, input1: np.ndarray) -> list[Any]:
    inputs = [lib.InferInput("INPUT0", [1, 16], "INT32"), lib.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(input0, binary_data=False)
    inputs[1].set_data_from_numpy(input1, binary_data=True)
    return inputs


def http_outputs(lib: Any) -> list[Any]:
    return [
        lib.InferRequestedOutput("OUTPUT0", binary_data=True),
        lib.InferRequestedOutput("OUTPUT1", binary_data=False),
    ]


QUERY = {"test_1": 1, "test_2": 2}


def test_simple_http_infer_client(server: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.http_port}")
    input0 = np.expand_dims(np.arange(0, 16, dtype=np.int32), axis=0)
    input1 = np.full(shape=(1, 16), fill_value=-1, dtype=np.int32)
    results = client.infer(
        "simple",
        http_inputs(httpclient, input0, input1),
        outputs=http_outputs(httpclient),
        query_params=QUERY,
    )
    statistics = client.get_inference_statistics(model_name="simple")
    assert len(statistics["model_stats"]) == 1
    check_sum_and_difference(results, input0, input1)
    results = client.infer(
        "simple", http_inputs(httpclient, input0, input1), outputs=None, query_params=QUERY
    )
    check_sum_and_difference(results, input0, input1)
    with pytest.raises(InferenceServerException) as failed:
        client.infer(
            "wrong_model_name", http_inputs(httpclient, input0, input1), outputs=http_outputs(httpclient)
        )
    assert failed.value.status() == "404"
    assert "Request for unknown model: 'wrong_model_name' is not found" in failed.value.message()
    client.close()


def test_simple_http_async_infer_client(server: ServerProcess) -> None:
    request_count = 2
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.http_port}", concurrency=request_count)
    input0, input1 = simple_data()
    inputs = [
        httpclient.InferInput("INPUT0", [1, 16], "INT32"),
        httpclient.InferInput("INPUT1", [1, 16], "INT32"),
    ]
    inputs[0].set_data_from_numpy(input0, binary_data=True)
    inputs[1].set_data_from_numpy(input1, binary_data=True)
    outputs = [
        httpclient.InferRequestedOutput("OUTPUT0", binary_data=True),
        httpclient.InferRequestedOutput("OUTPUT1", binary_data=True),
    ]
    pending = [
        client.async_infer(model_name="simple", inputs=inputs, outputs=outputs) for _ in range(request_count)
    ]
    for request in pending:
        check_sum_and_difference(request.get_result(), input0, input1)
    client.close()


def test_simple_http_aio_infer_client(server: ServerProcess) -> None:
    async def main() -> None:
        client = httpaio.InferenceServerClient(url=f"127.0.0.1:{server.http_port}")
        input0 = np.expand_dims(np.arange(0, 16, dtype=np.int32), axis=0)
        input1 = np.full(shape=(1, 16), fill_value=-1, dtype=np.int32)

        async def infer(name: str, outputs: bool) -> Any:
            return await client.infer(
                name,
                http_inputs(httpaio, input0, input1),
                outputs=http_outputs(httpaio) if outputs else None,
                query_params=QUERY,
            )

        results = await infer("simple", True)
        statistics = await client.get_inference_statistics(model_name="simple")
        assert len(statistics["model_stats"]) == 1
        check_sum_and_difference(results, input0, input1)
        check_sum_and_difference(await infer("simple", False), input0, input1)
        with pytest.raises(InferenceServerException) as failed:
            await infer("wrong_model_name", True)
        assert "wrong_model_name" in failed.value.message()
        first, second = await asyncio.gather(infer("simple", True), infer("simple", False))
        check_sum_and_difference(first, input0, input1)
        check_sum_and_difference(second, input0, input1)
        await client.close()

    asyncio.run(main())


def decimal_strings(array: np.ndarray) -> np.ndarray:
    return np.array([str(x).encode("utf-8") for x in array.reshape(array.size)], dtype=np.object_).reshape(
        array.shape
    )


def check_string_results(result: Any, in0: np.ndarray, in1: np.ndarray) -> None:
    output0, output1 = result.as_numpy("OUTPUT0"), result.as_numpy("OUTPUT1")
    for i in range(16):
        assert int(output0[0][i]) == in0[0][i] + in1[0][i], "incorrect sum"
        assert int(output1[0][i]) == in0[0][i] - in1[0][i], "incorrect difference"


NULL_CHARS = np.array([b"he\x00llo" for _ in range(16)], dtype=np.object_).reshape([1, 16])
BLOBS = np.array([b"\x00\x01\x02\x03" for _ in range(16)], dtype=np.bytes_).reshape([1, 16])


def test_simple_http_string_infer_client(server: ServerProcess) -> None:
    """simple_string (BYTES decimal strings, default warm-up) and simple_identity, binary and JSON."""
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.http_port}")
    in0, in1 = simple_data()
    inputs = [
        httpclient.InferInput("INPUT0", [1, 16], "BYTES"),
        httpclient.InferInput("INPUT1", [1, 16], "BYTES"),
    ]
    inputs[0].set_data_from_numpy(decimal_strings(in0), binary_data=True)
    inputs[1].set_data_from_numpy(decimal_strings(in1), binary_data=False)
    outputs = [
        httpclient.InferRequestedOutput("OUTPUT0", binary_data=True),
        httpclient.InferRequestedOutput("OUTPUT1", binary_data=False),
    ]
    check_string_results(client.infer(model_name="simple_string", inputs=inputs, outputs=outputs), in0, in1)

    def identity(array: np.ndarray, binary_data: bool) -> None:
        identity_input = httpclient.InferInput("INPUT0", list(array.shape), "BYTES")
        identity_input.set_data_from_numpy(array, binary_data=binary_data)
        wanted = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary_data)]
        got = client.infer(model_name="simple_identity", inputs=[identity_input], outputs=wanted).as_numpy(
            "OUTPUT0"
        )
        if array.dtype == np.object_:
            if binary_data:
                assert np.array_equal(array, got)
            else:
                expected = np.array(
                    [bytes(str(x), encoding="utf-8") for x in got.flatten()], dtype=np.object_
                )
                assert np.array_equal(array, expected.reshape([1, 16]))
        else:
            assert np.array_equal(array, np.char.encode(got.astype(str)))

    identity(NULL_CHARS, True)
    identity(NULL_CHARS, False)
    identity(BLOBS, True)
    identity(BLOBS, False)
    client.close()


# -- gRPC ------------------------------------------------------------------------------------


def grpc_inputs(lib: Any, input0: np.ndarray, input1: np.ndarray) -> list[Any]:
    inputs = [lib.InferInput("INPUT0", [1, 16], "INT32"), lib.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(input0)
    inputs[1].set_data_from_numpy(input1)
    return inputs


def grpc_outputs(lib: Any) -> list[Any]:
    return [lib.InferRequestedOutput("OUTPUT0"), lib.InferRequestedOutput("OUTPUT1")]


def test_simple_grpc_infer_client(server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(url=server.grpc_target)
    input0, input1 = simple_data()
    inputs = grpc_inputs(grpcclient, input0, input1)
    results = client.infer(
        model_name="simple",
        inputs=inputs,
        outputs=grpc_outputs(grpcclient),
        client_timeout=None,
        headers={"test": "1"},
    )
    statistics = client.get_inference_statistics(model_name="simple")
    assert len(statistics.model_stats) == 1
    check_sum_and_difference(results, input0, input1)
    check_sum_and_difference(client.infer(model_name="simple", inputs=inputs, outputs=None), input0, input1)
    client.close()


def test_simple_grpc_async_infer_client(server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(url=server.grpc_target)
    input0, input1 = simple_data()
    user_data: list[Any] = []

    def callback(user_data: list[Any], result: Any, error: Any) -> None:
        user_data.append(error if error else result)

    client.async_infer(
        model_name="simple",
        inputs=grpc_inputs(grpcclient, input0, input1),
        callback=partial(callback, user_data),
        outputs=grpc_outputs(grpcclient),
        client_timeout=None,
    )
    deadline = time.monotonic() + 10
    while not user_data and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(user_data) == 1 and not isinstance(user_data[0], InferenceServerException), user_data
    check_sum_and_difference(user_data[0], input0, input1)
    client.close()


def test_simple_grpc_aio_infer_client(server: ServerProcess) -> None:
    async def main() -> None:
        client = grpcaio.InferenceServerClient(url=server.grpc_target)
        input0, input1 = simple_data()
        inputs = grpc_inputs(grpcaio, input0, input1)
        results = await client.infer(
            model_name="simple",
            inputs=inputs,
            outputs=grpc_outputs(grpcaio),
            client_timeout=None,
            headers={"test": "1"},
        )
        statistics = await client.get_inference_statistics(model_name="simple")
        assert len(statistics.model_stats) == 1
        check_sum_and_difference(results, input0, input1)
        first, second = await asyncio.gather(
            client.infer(model_name="simple", inputs=inputs, outputs=None),
            client.infer(model_name="simple", inputs=inputs, outputs=None),
        )
        check_sum_and_difference(first, input0, input1)
        check_sum_and_difference(second, input0, input1)
        await client.close()

    asyncio.run(main())


def test_simple_grpc_health_metadata(server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(url=server.grpc_target)
    assert client.is_server_live(headers={"test": "1", "dummy": "2"})
    assert client.is_server_ready()
    assert client.is_model_ready("simple")
    assert client.get_server_metadata().name  # Triton's example wants "triton": left out
    assert client.get_model_metadata("simple", headers={"test": "1", "dummy": "2"}).name == "simple"
    with pytest.raises(InferenceServerException) as failed:
        client.get_model_metadata("wrong_model_name")
    assert failed.value.status() == "StatusCode.NOT_FOUND"
    assert "Request for unknown model" in failed.value.message()  # what the example checks
    config = client.get_model_config("simple")
    assert config.config.name == "simple"
    client.close()


def test_simple_grpc_string_infer_client(server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(url=server.grpc_target)
    in0, in1 = simple_data()
    inputs = [
        grpcclient.InferInput("INPUT0", [1, 16], "BYTES"),
        grpcclient.InferInput("INPUT1", [1, 16], "BYTES"),
    ]
    inputs[0].set_data_from_numpy(decimal_strings(in0))
    inputs[1].set_data_from_numpy(decimal_strings(in1))
    results = client.infer(model_name="simple_string", inputs=inputs, outputs=grpc_outputs(grpcclient))
    check_string_results(results, in0, in1)

    for array in (NULL_CHARS, BLOBS):
        identity_input = grpcclient.InferInput("INPUT0", list(array.shape), "BYTES")
        identity_input.set_data_from_numpy(array)
        got = client.infer(
            model_name="simple_identity",
            inputs=[identity_input],
            outputs=[grpcclient.InferRequestedOutput("OUTPUT0")],
        ).as_numpy("OUTPUT0")
        if array.dtype == np.object_:
            assert np.array_equal(array, got)
        else:
            assert np.array_equal(array, np.char.encode(got.astype(str)))
    client.close()


# -- gRPC streaming --------------------------------------------------------------------------


def stream_callback(answers: queue.Queue[Any], result: Any, error: Any) -> None:
    answers.put(error if error else result)


def test_stream_answers_each_request_with_its_id_and_errors_in_stream(server: ServerProcess) -> None:
    """The stream API of simple_grpc_custom_repeat / the sequence stream examples (start_stream,
    async_stream_infer, a callback queue) on ``simple``: one response per request, matched by
    id; a bad request in the middle answers with an error and the stream goes on."""
    answers: queue.Queue[Any] = queue.Queue()
    input0, input1 = simple_data()
    with grpcclient.InferenceServerClient(url=server.grpc_target) as client:
        client.start_stream(callback=partial(stream_callback, answers))
        for i in range(10):
            inputs = grpc_inputs(grpcclient, input0 + i, input1)
            client.async_stream_infer(
                model_name="simple", inputs=inputs, request_id=f"r{i}", outputs=grpc_outputs(grpcclient)
            )
            if i == 4:
                client.async_stream_infer(model_name="wrong_model_name", inputs=inputs, request_id="bad")
                bad = grpcclient.InferInput("INPUT0", [1, 3], "INT32")
                bad.set_data_from_numpy(np.zeros((1, 3), dtype=np.int32))
                client.async_stream_infer(model_name="simple", inputs=[bad], request_id="bad-shape")
        received = [answers.get(timeout=30) for _ in range(12)]
        client.stop_stream()
    errors = [a for a in received if isinstance(a, InferenceServerException)]
    results = {a.get_response().id: a for a in received if not isinstance(a, InferenceServerException)}
    assert len(errors) == 2
    assert any("wrong_model_name" in e.message() for e in errors)
    assert any("INPUT0" in e.message() for e in errors)
    assert sorted(results) == sorted(f"r{i}" for i in range(10))
    for i in range(10):
        check_sum_and_difference(results[f"r{i}"], input0 + i, input1)


def test_stream_aio_client(server: ServerProcess) -> None:
    """tritonclient.grpc.aio's ``stream_infer`` (the aio sequence stream example's API)."""

    async def main() -> None:
        client = grpcaio.InferenceServerClient(url=server.grpc_target)
        input0, input1 = simple_data()

        async def requests() -> Any:
            for i in range(5):
                yield {
                    "model_name": "simple",
                    "inputs": grpc_inputs(grpcaio, input0 * i, input1),
                    "outputs": grpc_outputs(grpcaio),
                    "request_id": str(i),
                }

        seen = {}
        async for result, error in client.stream_infer(requests()):
            assert error is None, error
            seen[result.get_response().id] = result
            if len(seen) == 5:
                break
        for i in range(5):
            check_sum_and_difference(seen[str(i)], input0 * i, input1)
        await client.close()

    asyncio.run(main())


def metric_total(server: ServerProcess, model: str, outcome: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    total = 0.0
    for line in text.splitlines():
        if (
            line.startswith("serving_requests_total{")
            and f'model="{model}"' in line
            and f'outcome="{outcome}"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def inflight(server: ServerProcess, model: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    prefix = f'serving_inflight_requests{{model="{model}"}} '
    return sum(float(line.removeprefix(prefix)) for line in text.splitlines() if line.startswith(prefix))


def test_stream_deadline_and_cancellation_end_in_flight_requests(server: ServerProcess) -> None:
    """A stream's deadline bounds every request on it; both a passed deadline and a client
    that cancels are counted as failures, like unary calls."""
    input0, input1 = simple_data()
    before = metric_total(server, "slow", "DEADLINE_EXCEEDED") + metric_total(server, "slow", "CANCELLED")
    answers: queue.Queue[Any] = queue.Queue()
    with grpcclient.InferenceServerClient(url=server.grpc_target) as client:
        client.start_stream(callback=partial(stream_callback, answers), stream_timeout=0.3)
        client.async_stream_infer(
            model_name="slow", inputs=grpc_inputs(grpcclient, input0, input1), request_id="s"
        )
        ended = answers.get(timeout=10)
        assert (
            isinstance(ended, InferenceServerException) and ended.status() == "StatusCode.DEADLINE_EXCEEDED"
        )
        client.stop_stream()
    wait_until(lambda: inflight(server, "slow") == 0, 10, message="the expired request is still in flight")
    with grpcclient.InferenceServerClient(url=server.grpc_target) as client:
        client.start_stream(callback=partial(stream_callback, answers))
        client.async_stream_infer(
            model_name="slow", inputs=grpc_inputs(grpcclient, input0, input1), request_id="c"
        )
        # cancelled while the server works on it (the injected latency holds it 1.5 s)
        wait_until(lambda: inflight(server, "slow") >= 1, 10, message="the request never reached the server")
        client.stop_stream(cancel_requests=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = metric_total(server, "slow", "DEADLINE_EXCEEDED") + metric_total(server, "slow", "CANCELLED")
        if after >= before + 2:
            break
        time.sleep(0.1)
    assert after == before + 2
    assert metric_total(server, "slow", "OK") == 0  # neither finished after its caller left


# -- statistics and configuration -------------------------------------------------------------


def stats_of(server: ServerProcess, path: str) -> Any:
    answer = httpx.get(f"{server.url}{path}")
    assert answer.status_code == 200, answer.text
    return answer.json()["model_stats"]


def test_statistics_count_every_protocol_and_agree_with_metrics(server: ServerProcess) -> None:
    (before,) = stats_of(server, "/v2/models/simple/versions/1/stats")
    input0, input1 = simple_data()
    http = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.http_port}")
    grpc = grpcclient.InferenceServerClient(url=server.grpc_target)
    for _ in range(3):
        http.infer("simple", http_inputs(httpclient, input0, input1))
        grpc.infer("simple", grpc_inputs(grpcclient, input0, input1))
    bad = grpcclient.InferInput("INPUT0", [1, 3], "INT32")
    bad.set_data_from_numpy(np.zeros((1, 3), dtype=np.int32))
    with pytest.raises(InferenceServerException):
        grpc.infer("simple", [bad])
    (after,) = stats_of(server, "/v2/models/simple/versions/1/stats")
    grpc_stats = grpc.get_inference_statistics(model_name="simple", model_version="1", as_json=True)
    http.close()
    grpc.close()

    def delta(*keys: str) -> int:
        a, b = after, before
        for key in keys:
            a, b = a[key], b[key]
        return int(a) - int(b)

    assert (after["name"], after["version"]) == ("simple", "1")
    assert delta("inference_stats", "success", "count") == 6
    assert delta("inference_stats", "fail", "count") == 1  # routed to version 1, refused there
    assert delta("inference_stats", "success", "ns") > 0
    assert delta("inference_count") == delta("execution_count") == 6
    for stage in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert delta("inference_stats", stage, "count") == 6, stage
    assert delta("inference_stats", "compute_infer", "ns") > 0
    assert after["last_inference"] >= int(time.time() * 1000) - 60_000
    (rows_of_one,) = [b for b in after["batch_stats"] if b["batch_size"] == 1]
    assert rows_of_one["compute_infer"]["count"] >= 6
    # one source of truth: the Prometheus counters say the same
    ok = metric_total(server, "simple", "2xx") + metric_total(server, "simple", "OK")
    assert after["inference_stats"]["success"]["count"] == ok
    # gRPC answers the same shape (uint64 as JSON strings, as protobuf spells them)
    (over_grpc,) = grpc_stats["model_stats"]
    assert (
        int(over_grpc["inference_stats"]["success"]["count"]) >= after["inference_stats"]["success"]["count"]
    )


def test_statistics_of_every_model_and_unknown_ones(server: ServerProcess) -> None:
    every = stats_of(server, "/v2/models/stats")
    assert {(s["name"], s["version"]) for s in every} == {
        ("simple", "1"),
        ("simple_string", "1"),
        ("simple_identity", "1"),
        ("slow", "1"),
    }
    assert httpx.get(f"{server.url}/v2/models/nope/stats").status_code == 404
    assert httpx.get(f"{server.url}/v2/models/simple/versions/9/stats").status_code == 404
    assert httpx.get(f"{server.url}/v2/models/simple/versions/x/stats").status_code == 400
    client = grpcclient.InferenceServerClient(url=server.grpc_target)
    assert len(client.get_inference_statistics().model_stats) == 4
    for name, version in (("nope", ""), ("simple", "9")):
        with pytest.raises(InferenceServerException) as failed:
            client.get_inference_statistics(model_name=name, model_version=version)
        assert failed.value.status() == "StatusCode.NOT_FOUND"
    metadata = client.get_server_metadata()
    assert "statistics" in metadata.extensions and "statistics_metrics" not in metadata.extensions
    assert "model_configuration" in metadata.extensions
    client.close()


def test_model_configuration_over_both_protocols(server: ServerProcess) -> None:
    http = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.http_port}")
    grpc = grpcclient.InferenceServerClient(url=server.grpc_target)
    config = http.get_model_config("simple")
    assert config["name"] == "simple"
    assert (config["platform"], config["backend"], config["max_batch_size"]) == (
        "onnxruntime_onnx",
        "onnxruntime",
        1024,
    )
    assert config["input"] == [
        {"name": "INPUT0", "data_type": "TYPE_INT32", "dims": [16]},
        {"name": "INPUT1", "data_type": "TYPE_INT32", "dims": [16]},
    ]
    assert [o["name"] for o in config["output"]] == ["OUTPUT0", "OUTPUT1"]
    assert config["version_policy"] == {"latest": {"num_versions": 1}}
    assert http.get_model_config("simple_string")["input"][0]["data_type"] == "TYPE_STRING"
    over_grpc = grpc.get_model_config("simple", as_json=True)["config"]
    assert over_grpc["input"][0] == {"name": "INPUT0", "data_type": "TYPE_INT32", "dims": ["16"]}
    assert over_grpc["max_batch_size"] == 1024 and over_grpc["platform"] == "onnxruntime_onnx"
    assert http.get_model_config("simple", model_version="1")["name"] == "simple"
    with pytest.raises(InferenceServerException) as failed:
        http.get_model_config("nope")
    assert failed.value.status() == "404"
    with pytest.raises(InferenceServerException) as failed:
        grpc.get_model_config("nope")
    assert failed.value.status() == "StatusCode.NOT_FOUND"
    http.close()
    grpc.close()


def test_bytes_models_with_the_default_warmup_are_ready(server: ServerProcess) -> None:
    index = httpx.post(f"{server.url}/v2/repository/index", json={}).json()
    assert {(m["name"], m["state"]) for m in index} >= {
        ("simple_string", "READY"),
        ("simple_identity", "READY"),
    }
    assert Path(server.log_path).read_text().count("refused the warm-up inputs") == 0

"""Locust workload for the OIP v2 server: REST and gRPC users, with an SLO gate.

The model and the payload are chosen by options; the input's name, datatype and feature
count are read from the model's metadata, so any served model works. Headless runs end with
exit code 1 when the SLO is missed (p99 or error ratio), for pipelines and rollout checks:

    locust -f loadtests/locustfile.py --headless -u 16 -r 16 -t 30s \\
        --host http://127.0.0.1:8080 --grpc-target 127.0.0.1:8081 \\
        --model iris-xgb --rows 1 --slo-p99-ms 50 --slo-max-error-ratio 0.001 RestUser GrpcUser

Options: ``--model``, ``--model-version`` (empty: the router picks), ``--rows`` (rows per
request), ``--binary`` (REST binary tensor extension instead of JSON), ``--grpc-target``,
``--slo-p99-ms`` (0 disables), ``--slo-max-error-ratio``. Pick users by class name:
``RestUser``, ``GrpcUser`` (both by default).
"""

from __future__ import annotations

import json
import logging
import math
import time
import urllib.request
from typing import Any

import numpy as np
from locust import User, events, task
from locust.contrib.fasthttp import FastHttpUser
from locust.env import Environment

log = logging.getLogger("loadtests.locust")

_NUMPY = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16}


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--model", default="iris-xgb", help="model to call")
    parser.add_argument("--model-version", default="", help="version to call (default: the router's choice)")
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    parser.add_argument("--binary", action="store_true", help="REST: send binary tensor data instead of JSON")
    parser.add_argument("--grpc-target", default="127.0.0.1:8081", help="host:port of the gRPC listener")
    parser.add_argument(
        "--slo-p99-ms", type=float, default=0.0, help="fail the run if p99 exceeds this (0: off)"
    )
    parser.add_argument(
        "--slo-max-error-ratio", type=float, default=0.01, help="fail the run above this error ratio"
    )


class Payload:
    """One request's worth of data for the model, built once per run from its metadata."""

    def __init__(self, metadata: dict[str, Any], rows: int) -> None:
        spec = metadata["inputs"][0]
        self.input_name: str = spec["name"]
        self.datatype: str = spec["datatype"]
        self.shape = [rows, *(d if d > 0 else 1 for d in spec["shape"][1:])]
        dtype = _NUMPY.get(self.datatype)
        if dtype is None:
            raise SystemExit(f"locustfile: input datatype {self.datatype} is not supported")
        self.array = np.random.default_rng(0).normal(size=self.shape).astype(dtype)
        self.json_body = json.dumps(
            {
                "inputs": [
                    {
                        "name": self.input_name,
                        "datatype": self.datatype,
                        "shape": self.shape,
                        "data": self.array.ravel().tolist(),
                    }
                ]
            }
        ).encode()
        header = json.dumps(
            {
                "inputs": [
                    {
                        "name": self.input_name,
                        "datatype": self.datatype,
                        "shape": self.shape,
                        "parameters": {"binary_data_size": self.array.nbytes},
                    }
                ],
                "parameters": {"binary_data_output": True},
            }
        ).encode()
        self.binary_body = header + self.array.tobytes()
        self.binary_header_length = len(header)


def _infer_path(options: Any) -> str:
    version = f"/versions/{options.model_version}" if options.model_version else ""
    return f"/v2/models/{options.model}{version}/infer"


def _metadata(environment: Environment) -> dict[str, Any]:
    options = environment.parsed_options
    if environment.host:
        with urllib.request.urlopen(f"{environment.host}/v2/models/{options.model}", timeout=10) as response:
            doc: dict[str, Any] = json.loads(response.read())
            return doc
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    with grpc.insecure_channel(options.grpc_target) as channel:
        reply = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelMetadata(
            service_pb2.ModelMetadataRequest(name=options.model), timeout=10
        )
    return {
        "inputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in reply.inputs]
    }


_payload: dict[str, Payload] = {}


def payload(environment: Environment) -> Payload:
    if "value" not in _payload:
        _payload["value"] = Payload(_metadata(environment), environment.parsed_options.rows)
    return _payload["value"]


class RestUser(FastHttpUser):
    """OIP v2 REST: JSON (default) or binary tensor data (``--binary``)."""

    def on_start(self) -> None:
        self.data = payload(self.environment)
        options = self.environment.parsed_options
        self.path = _infer_path(options)
        self.binary = options.binary

    @task
    def infer(self) -> None:
        if self.binary:
            headers = {
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(self.data.binary_header_length),
            }
            self.client.post(self.path, data=self.data.binary_body, headers=headers, name="rest-binary infer")
        else:
            self.client.post(
                self.path,
                data=self.data.json_body,
                headers={"Content-Type": "application/json"},
                name="rest-json infer",
            )


class GrpcUser(User):
    """OIP v2 gRPC ``ModelInfer`` with raw input contents."""

    def on_start(self) -> None:
        import grpc
        import grpc.experimental.gevent as grpc_gevent
        from tritonclient.grpc import service_pb2, service_pb2_grpc

        grpc_gevent.init_gevent()
        options = self.environment.parsed_options
        data = payload(self.environment)
        self.channel = grpc.insecure_channel(options.grpc_target)
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)
        request = service_pb2.ModelInferRequest(model_name=options.model, model_version=options.model_version)
        tensor = request.inputs.add()
        tensor.name, tensor.datatype = data.input_name, data.datatype
        tensor.shape.extend(data.shape)
        request.raw_input_contents.append(data.array.tobytes())
        self.request = request
        self.error_type = grpc.RpcError

    def on_stop(self) -> None:
        channel = getattr(self, "channel", None)  # None when the run ended inside on_start
        if channel is not None:
            channel.close()

    @task
    def infer(self) -> None:
        start = time.perf_counter()
        exception: Exception | None = None
        size = 0
        try:
            reply = self.stub.ModelInfer(self.request, timeout=30)
            size = reply.ByteSize()
        except self.error_type as exc:
            exception = exc
        self.environment.events.request.fire(
            request_type="grpc",
            name="grpc infer",
            response_time=(time.perf_counter() - start) * 1000,
            response_length=size,
            exception=exception,
            context={},
        )


class LatencyHistogram:
    """Response times in buckets 1 % wide, for the gate's p99. Locust's own percentiles
    round to whole milliseconds, so against a fast server every p99 reads 0 ms."""

    _GROWTH = math.log(1.01)

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0

    def add(self, ms: float) -> None:
        key = math.floor(math.log(max(ms, 1e-6)) / self._GROWTH)
        self.counts[key] = self.counts.get(key, 0) + 1
        self.total += 1

    def percentile(self, q: float) -> float:
        """The upper edge of the bucket holding the q-quantile (at most 1 % above it)."""
        running, target = 0, q * self.total
        for key in sorted(self.counts):
            running += self.counts[key]
            if running >= target:
                return math.exp((key + 1) * self._GROWTH)
        return 0.0


_latencies = LatencyHistogram()


@events.request.add_listener
def _record(response_time: float, **_kwargs: Any) -> None:
    _latencies.add(response_time)


@events.quitting.add_listener
def _slo_gate(environment: Environment, **_kwargs: Any) -> None:
    """Exit code 1 when the run missed its SLO (or sent nothing)."""
    options = environment.parsed_options
    total = environment.stats.total
    for entry in environment.stats.entries.values():
        log.info("%s: %d requests, %d failures", entry.name, entry.num_requests, entry.num_failures)
    problems = []
    if total.num_requests == 0:
        problems.append("no requests were made")
    else:
        error_ratio = total.num_failures / total.num_requests
        if error_ratio > options.slo_max_error_ratio:
            problems.append(f"error ratio {error_ratio:.4f} > {options.slo_max_error_ratio}")
        p99 = _latencies.percentile(0.99)
        if options.slo_p99_ms and p99 > options.slo_p99_ms:
            problems.append(f"p99 {p99:.3f} ms > {options.slo_p99_ms} ms")
    if problems:
        log.error("SLO missed: %s", "; ".join(problems))
        environment.process_exit_code = 1
    else:
        log.info("SLO met: %d requests, %d failures", total.num_requests, total.num_failures)

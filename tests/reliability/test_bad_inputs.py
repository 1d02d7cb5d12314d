"""The hostile-input matrix: every bad request gets a clear 4xx ``{"error": ...}`` (REST) or
the right gRPC code with details, never a traceback, and the server stays healthy.

One real server on the demo repository (iris-xgb takes FP32 [-1, 4], at most
``max_batch_size`` rows), small body and element limits so the limit cases are cheap.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import orjson
import pytest

from serving.protocol.grpc.stubs import SERVICE, load
from tests.protocol.grpc.client import OipClient
from tests.server_process import DEMO_REPO, ServerProcess, rest_env, running_server

MAX_BODY = 256 * 1024
MAX_ELEMENTS = 100_000
INFER = "/v2/models/iris-xgb/infer"
GOOD_TENSOR = {"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}
GOOD = {"inputs": [GOOD_TENSOR]}


def tensor(**changes: Any) -> dict[str, Any]:
    return {**GOOD_TENSOR, **changes}


def body(*inputs: dict[str, Any], **extra: Any) -> bytes:
    return orjson.dumps({"inputs": list(inputs), **extra})


def nested(depth: int) -> Any:
    value: Any = [1.0]
    for _ in range(depth):
        value = [value]
    return value


@dataclass
class Rest:
    """One bad REST request: raw bytes to a raw path, and the status it must get."""

    id: str
    content: bytes
    status: int
    path: str = INFER
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})
    method: str = "POST"
    declared_length: int | None = None
    """Content-Length to announce instead of the real one (the server must not wait for it)."""


def binary(
    header: dict[str, Any], blob: bytes, length: int | str | None = None, trailing: bytes = b""
) -> Rest:
    head = orjson.dumps(header)
    value = str(len(head) if length is None else length)
    return Rest(
        "",
        head + blob + trailing,
        400,
        headers={"content-type": "application/octet-stream", "inference-header-content-length": value},
    )


def raw_input(size: int | str | None = 16, **changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": "input", "datatype": "FP32", "shape": [1, 4], **changes}
    if size is not None:
        spec["parameters"] = {"binary_data_size": size}
    return spec


FOUR = np.array([5.1, 3.5, 1.4, 0.2], dtype="<f4").tobytes()

REST_JSON = [
    Rest("not-json", b"{not json", 400),
    Rest("truncated-json", body(GOOD_TENSOR)[:40], 400),
    Rest("empty-body", b"", 400),
    Rest("top-level-array", b"[1, 2, 3]", 400),
    Rest("top-level-string", b'"inputs"', 400),
    Rest("inputs-not-list", orjson.dumps({"inputs": {"input": [1, 2, 3, 4]}}), 400),
    Rest("inputs-empty", orjson.dumps({"inputs": []}), 400),
    Rest("inputs-missing", orjson.dumps({"outputs": []}), 400),
    Rest("input-not-object", orjson.dumps({"inputs": [[1, 2, 3, 4]]}), 400),
    Rest("name-missing", body({k: v for k, v in GOOD_TENSOR.items() if k != "name"}), 400),
    Rest("name-not-string", body(tensor(name=7)), 400),
    Rest("datatype-unknown", body(tensor(datatype="FP128")), 400),
    Rest("datatype-wrong-for-model", body(tensor(datatype="INT32", data=[1, 2, 3, 4])), 400),
    Rest("shape-not-list", body(tensor(shape="1,4")), 400),
    Rest("shape-negative-dim", body(tensor(shape=[-1, 4])), 400),
    Rest("shape-float-dim", body(tensor(shape=[1.0, 4])), 400),
    Rest("shape-bool-dim", body(tensor(shape=[True, 4])), 400),
    Rest("shape-rank-100", body(tensor(shape=[1] * 100)), 400),
    Rest("shape-huge", body(tensor(shape=[10**12, 4])), 400),
    Rest("shape-beyond-int64", body(tensor(shape=[2**63, 2**63])), 400),
    Rest("shape-wrong-width", body(tensor(shape=[1, 5], data=[1, 2, 3, 4, 5])), 400),
    Rest("data-missing", body({k: v for k, v in GOOD_TENSOR.items() if k != "data"}), 400),
    Rest("data-not-list", body(tensor(data="5.1,3.5,1.4,0.2")), 400),
    Rest("data-too-few", body(tensor(shape=[2, 4])), 400),
    Rest("data-too-many", body(tensor(data=[1.0] * 8)), 400),
    Rest("data-strings", body(tensor(data=["a", "b", "c", "d"])), 400),
    Rest("data-objects", body(tensor(data=[{"v": 1}] * 4)), 400),
    Rest("data-null", body(tensor(data=[1.0, None, 2.0, 3.0])), 400),
    Rest("data-nan-literal", b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[NaN,1,2,3]}]}', 400),
    Rest("data-inf-literal", b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[Infinity,1,2,3]}]}', 400),
    Rest("data-fp32-overflow", body(tensor(data=[1e300, 1.0, 2.0, 3.0])), 400),
    Rest("data-ragged", body(tensor(data=[[1.0, 2.0], [3.0]])), 400),
    Rest("data-nested-20", body(tensor(shape=[1], data=nested(20))), 400),
    Rest("data-nested-5000", b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":' + b"[" * 5000 + b"]" * 5000 + b"}]}", 400),
    Rest("int-beyond-64-bit", b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[1,2,3,' + b"9" * 400 + b"]}]}", 400),
    Rest("duplicate-input", body(GOOD_TENSOR, GOOD_TENSOR), 400),
    Rest("unknown-input-name", body(tensor(name="features")), 400),
    Rest("extra-input", body(GOOD_TENSOR, tensor(name="extra")), 400),
    Rest("unknown-output", body(GOOD_TENSOR, outputs=[{"name": "nope"}]), 400),
    Rest("outputs-not-list", body(GOOD_TENSOR, outputs={"name": "probabilities"}), 400),
    Rest("output-without-name", body(GOOD_TENSOR, outputs=[{}]), 400),
    Rest("id-not-string", body(GOOD_TENSOR, id=12), 400),
    Rest("parameters-not-object", body(GOOD_TENSOR, parameters=[1]), 400),
    Rest("empty-batch", body(tensor(shape=[0, 4], data=[])), 400),
    Rest("batch-above-max", body(tensor(shape=[5000, 4], data=[1.0] * 20000)), 400),
    Rest("bad-utf8-in-body", b'{"inputs":[{"name":"\xff\xfe","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}', 400),
    Rest("content-type-text", body(GOOD_TENSOR), 415, headers={"content-type": "text/plain"}),
    Rest("body-too-large", b"", 413, declared_length=MAX_BODY + 1),
    Rest("bad-timeout-header", body(GOOD_TENSOR), 400, headers={"content-type": "application/json", "x-request-timeout-ms": "soon"}),
    Rest("path-traversal-model", body(GOOD_TENSOR), 400, path="/v2/models/%2e%2e/infer"),
    Rest("path-traversal-slashes", body(GOOD_TENSOR), 404, path="/v2/models/..%2f..%2fetc%2fpasswd/infer"),
    Rest("path-traversal-version", body(GOOD_TENSOR), 400, path="/v2/models/iris-xgb/versions/%2e%2e/infer"),
    Rest("path-traversal-metadata", b"", 400, path="/v2/models/%2e%2e", method="GET"),
    Rest("path-traversal-metadata-slash", b"", 404, path="/v2/models/%2e%2e%2fmodel_repo", method="GET"),
    Rest("bad-utf8-model-name", body(GOOD_TENSOR), 400, path="/v2/models/%ff%fe/infer"),
    Rest("model-name-too-long", body(GOOD_TENSOR), 400, path=f"/v2/models/{'m' * 300}/infer"),
    Rest("unknown-model", body(GOOD_TENSOR), 404, path="/v2/models/no-such-model/infer"),
    Rest("unknown-version", body(GOOD_TENSOR), 404, path="/v2/models/iris-xgb/versions/99/infer"),
    Rest("version-zero", body(GOOD_TENSOR), 400, path="/v2/models/iris-xgb/versions/0/infer"),
    Rest("version-not-number", body(GOOD_TENSOR), 400, path="/v2/models/iris-xgb/versions/latest/infer"),
    Rest("v1-instances-not-list", orjson.dumps({"instances": "x"}), 400, path="/v1/models/iris-xgb:predict"),
    Rest("v1-instances-ragged", orjson.dumps({"instances": [[1, 2, 3, 4], [1]]}), 400, path="/v1/models/iris-xgb:predict"),
    Rest("v1-instances-empty", orjson.dumps({"instances": []}), 400, path="/v1/models/iris-xgb:predict"),
]  # fmt: skip

REST_BINARY = [
    ("header-length-not-number", binary({"inputs": [raw_input()]}, FOUR, length="abc")),
    ("header-length-negative", binary({"inputs": [raw_input()]}, FOUR, length="-4")),
    ("header-length-past-body", binary({"inputs": [raw_input()]}, FOUR, length=10_000)),
    ("header-length-zero", binary({"inputs": [raw_input()]}, FOUR, length=0)),
    ("header-not-json", Rest("", b"{inputs: ]" + FOUR, 400, headers={"inference-header-content-length": "10"})),
    ("header-cut-short", binary({"inputs": [raw_input()]}, FOUR, length=20)),
    ("size-past-end", binary({"inputs": [raw_input(size=64)]}, FOUR)),
    ("size-too-small-for-shape", binary({"inputs": [raw_input(size=8)]}, FOUR)),
    ("size-negative", binary({"inputs": [raw_input(size=-16)]}, FOUR)),
    ("size-string", binary({"inputs": [raw_input(size="16")]}, FOUR)),
    ("trailing-bytes", binary({"inputs": [raw_input()]}, FOUR, trailing=b"\x00" * 4)),
    ("no-data-no-size", binary({"inputs": [raw_input(size=None)]}, FOUR)),
    ("shape-negative", binary({"inputs": [raw_input(shape=[-1, 4])]}, FOUR)),
    ("shape-huge", binary({"inputs": [raw_input(shape=[10**9, 4])]}, FOUR)),
    ("bytes-framing-broken", binary({"inputs": [raw_input(datatype="BYTES", shape=[1, 4])]}, b"\xff\xff\xff\x7f" + FOUR[:12])),
    ("datatype-unknown", binary({"inputs": [raw_input(datatype="FP8")]}, FOUR)),
    ("duplicate-input", binary({"inputs": [raw_input(), raw_input()]}, FOUR + FOUR)),
    ("empty-batch", binary({"inputs": [raw_input(size=0, shape=[0, 4])]}, b"")),
    ("inputs-empty", binary({"inputs": []}, b"")),
]  # fmt: skip


def _rest_cases() -> list[Rest]:
    cases = list(REST_JSON)
    for name, case in REST_BINARY:
        case.id = f"binary-{name}"
        cases.append(case)
    return cases


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, rest_path: str) -> Iterator[ServerProcess]:
    env = {
        "SERVING_MAX_BODY_BYTES": str(MAX_BODY),
        "SERVING_MAX_TENSOR_ELEMENTS": str(MAX_ELEMENTS),
        **rest_env(rest_path),
    }
    with running_server(DEMO_REPO, tmp_path_factory.mktemp("bad-inputs"), env=env) as srv:
        yield srv


def _raw_http(server: ServerProcess, case: Rest) -> tuple[int, bytes]:
    """Send the request byte for byte (httpx would normalise paths like ``%2e%2e``)."""
    lines = [f"{case.method} {case.path} HTTP/1.1", "host: 127.0.0.1", "connection: close"]
    lines += [f"{k}: {v}" for k, v in case.headers.items()]
    length = len(case.content) if case.declared_length is None else case.declared_length
    lines.append(f"content-length: {length}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + case.content
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=30) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, payload = b"".join(chunks).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        payload = _dechunk(payload)
    return status, payload


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out


@pytest.mark.parametrize("case", _rest_cases(), ids=lambda c: c.id)
def test_rest_bad_input(server: ServerProcess, case: Rest) -> None:
    status, payload = _raw_http(server, case)
    assert status == case.status, payload[:300]
    doc = orjson.loads(payload)
    assert isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"], doc
    assert "Traceback" not in doc["error"] and 'File "' not in doc["error"]


@dataclass
class Grpc:
    id: str
    build: Callable[[Any], Any]
    code: grpc.StatusCode


def _request(pb: Any, model: str = "iris-xgb", **tensor_fields: Any) -> Any:
    req = pb.ModelInferRequest(model_name=model)
    fields = {"name": "input", "datatype": "FP32", "shape": [1, 4], **tensor_fields}
    contents = fields.pop("values", [5.1, 3.5, 1.4, 0.2])
    t = req.inputs.add(**fields)
    if contents is not None:
        t.contents.fp32_contents.extend(contents)
    return req


def _with(req: Any, change: Callable[[Any], Any]) -> Any:
    change(req)
    return req


INVALID = grpc.StatusCode.INVALID_ARGUMENT
GRPC_CASES = [
    Grpc("empty-model-name", lambda pb: _request(pb, model=""), INVALID),
    Grpc("traversal-model-name", lambda pb: _request(pb, model="../../etc/passwd"), INVALID),
    Grpc("traversal-version", lambda pb: _with(_request(pb), lambda r: setattr(r, "model_version", "../1")), INVALID),
    Grpc("version-zero", lambda pb: _with(_request(pb), lambda r: setattr(r, "model_version", "0")), INVALID),
    Grpc("unknown-model", lambda pb: _request(pb, model="no-such-model"), grpc.StatusCode.NOT_FOUND),
    Grpc("unknown-version", lambda pb: _with(_request(pb), lambda r: setattr(r, "model_version", "42")), grpc.StatusCode.NOT_FOUND),
    Grpc("no-inputs", lambda pb: pb.ModelInferRequest(model_name="iris-xgb"), INVALID),
    Grpc("contents-too-few", lambda pb: _request(pb, values=[1.0]), INVALID),
    Grpc("contents-too-many", lambda pb: _request(pb, values=[1.0] * 9), INVALID),
    Grpc("negative-dim", lambda pb: _request(pb, shape=[-1, 4]), INVALID),
    Grpc("huge-shape", lambda pb: _request(pb, shape=[2**40, 2**20]), INVALID),
    Grpc("unknown-datatype", lambda pb: _request(pb, datatype="FP128"), INVALID),
    Grpc("wrong-datatype", lambda pb: _request(pb, datatype="FP64", values=None), INVALID),
    Grpc("fp16-typed-contents", lambda pb: _request(pb, datatype="FP16", values=None), INVALID),
    Grpc("wrong-width", lambda pb: _request(pb, shape=[1, 5], values=[1.0] * 5), INVALID),
    Grpc("empty-batch", lambda pb: _request(pb, shape=[0, 4], values=[]), INVALID),
    Grpc("duplicate-input", lambda pb: _with(_request(pb), lambda r: r.inputs.append(r.inputs[0])), INVALID),
    Grpc("unknown-input", lambda pb: _request(pb, name="features"), INVALID),
    Grpc("unknown-output", lambda pb: _with(_request(pb), lambda r: r.outputs.add(name="nope")), INVALID),
    Grpc("raw-count-mismatch", lambda pb: _with(_request(pb, values=None), lambda r: r.raw_input_contents.extend([FOUR, FOUR])), INVALID),
    Grpc("raw-size-mismatch", lambda pb: _with(_request(pb, values=None), lambda r: r.raw_input_contents.append(FOUR[:12])), INVALID),
    Grpc("raw-and-contents", lambda pb: _with(_request(pb), lambda r: r.raw_input_contents.append(FOUR)), INVALID),
    Grpc("raw-bytes-framing", lambda pb: _with(_request(pb, datatype="BYTES", values=None), lambda r: r.raw_input_contents.append(struct.pack("<I", 2**31))), INVALID),
    Grpc("message-too-large", lambda pb: _request(pb, shape=[1, 4], values=[1.0] * (MAX_BODY // 4 + 100)), grpc.StatusCode.RESOURCE_EXHAUSTED),
]  # fmt: skip


@pytest.fixture(scope="module")
def grpc_client(server: ServerProcess) -> Iterator[OipClient]:
    client = OipClient(server.grpc_target)
    yield client
    client.close()


@pytest.mark.parametrize("case", GRPC_CASES, ids=lambda c: c.id)
def test_grpc_bad_input(grpc_client: OipClient, case: Grpc) -> None:
    with pytest.raises(grpc.RpcError) as err:
        grpc_client.call("ModelInfer", case.build(grpc_client.pb), timeout=30)
    assert err.value.code() == case.code, err.value.details()
    details = err.value.details() or ""
    assert details and "Traceback" not in details and 'File "' not in details


@pytest.mark.parametrize(
    "payload",
    [b"\xff\xff\xff\xff\xff", b"\x0a\x05ab", b"\x0a\x02\xff\xfe"],  # garbage, truncated, bad UTF-8
    ids=["garbage", "truncated", "bad-utf8-name"],
)
def test_grpc_malformed_protobuf(server: ServerProcess, payload: bytes) -> None:
    pb = load()
    with grpc.insecure_channel(server.grpc_target) as channel:
        rpc = channel.unary_unary(
            f"/{SERVICE}/ModelInfer",
            request_serializer=lambda raw: raw,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as err:
            rpc(payload, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Traceback" not in (err.value.details() or "")


def test_matrix_size() -> None:
    assert len(_rest_cases()) + len(GRPC_CASES) + 3 >= 40


def test_server_is_healthy_after_the_matrix(
    server: ServerProcess, grpc_client: OipClient, tmp_path: Path
) -> None:
    # Runs last in this module (pytest keeps file order): every case above has been sent.
    assert httpx.get(f"{server.url}/v2/health/live", timeout=5).status_code == 200
    assert httpx.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 200
    good = httpx.post(f"{server.url}{INFER}", json=GOOD, timeout=10)
    assert good.status_code == 200 and len(good.json()["outputs"][0]["data"]) == 3
    reply = grpc_client.call("ModelInfer", _request(grpc_client.pb), timeout=10)
    assert reply.model_name == "iris-xgb"
    assert server.proc.poll() is None
    assert "Traceback" not in server.log()

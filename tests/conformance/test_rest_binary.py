"""The REST binary tensor extension on the wire (httpx, byte by byte) and its error messages."""

from __future__ import annotations

import struct
from collections.abc import Mapping

import httpx
import numpy as np
import orjson
import pytest

from serving.errors import InvalidInput
from serving.protocol.rawtensor import from_raw, to_raw
from tests.conformance.reference import reference, sample
from tests.server_process import ServerProcess

HEADER = "Inference-Header-Content-Length"


def _post(server: ServerProcess, header: Mapping[str, object], blobs: bytes, **extra: str) -> httpx.Response:
    json_part = orjson.dumps(header)
    headers = {HEADER: str(len(json_part)), "content-type": "application/octet-stream", **extra}
    return httpx.post(
        f"{server.url}/v2/models/cancer-onnx/infer", content=json_part + blobs, headers=headers, timeout=10
    )


def _split(response: httpx.Response) -> tuple[dict[str, object], bytes]:
    length = int(response.headers[HEADER])
    return orjson.loads(response.content[:length]), response.content[length:]


def _binary_input(rows: int, size: int) -> dict[str, object]:
    """The JSON header entry of the demo model's one input, sent as ``size`` raw bytes."""
    return {
        "name": "input",
        "datatype": "FP32",
        "shape": [rows, 30],
        "parameters": {"binary_data_size": size},
    }


def test_binary_in_binary_out(demo_server: ServerProcess) -> None:
    x = sample(30, rows=2)
    header = {
        "inputs": [_binary_input(2, x.nbytes)],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}, {"name": "label"}],
    }
    response = _post(demo_server, header, x.tobytes())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    doc, blob = _split(response)
    outputs = {o["name"]: o for o in doc["outputs"]}  # type: ignore[attr-defined]
    expected = reference("cancer-onnx", "1", x)
    # label stayed JSON (binary_data not set), probabilities came raw
    assert outputs["label"]["data"] == expected["label"].tolist()
    assert outputs["probabilities"]["parameters"] == {"binary_data_size": 16} and len(blob) == 16
    np.testing.assert_allclose(np.frombuffer(blob, "<f4").reshape(2, 2), expected["probabilities"], rtol=1e-6)


def test_binary_request_json_response(demo_server: ServerProcess) -> None:
    """Binary inputs without any binary output request: a plain JSON response."""
    x = sample(30, rows=1)
    header = {"inputs": [_binary_input(1, x.nbytes)]}
    response = _post(demo_server, header, x.tobytes())
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert HEADER.lower() not in response.headers
    assert {o["name"] for o in response.json()["outputs"]} == {"label", "probabilities"}


@pytest.mark.parametrize(
    ("size", "blob", "message"),
    [
        (120, b"\x00" * 100, "binary_data_size 120 runs past the end of the body (100 binary bytes left)"),
        (100, b"\x00" * 100, "raw data has 100 bytes but shape [1, 30] of FP32 needs 120"),
        (120, b"\x00" * 130, "the body has 10 bytes after the last binary input"),
        (-1, b"", "binary_data_size must be a non-negative integer"),
    ],
)
def test_size_mismatches_are_400(demo_server: ServerProcess, size: int, blob: bytes, message: str) -> None:
    header = {"inputs": [_binary_input(1, size)]}
    response = _post(demo_server, header, blob)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_bad_header_length(demo_server: ServerProcess) -> None:
    url = f"{demo_server.url}/v2/models/cancer-onnx/infer"
    for value, message in [("abc", "non-negative integer"), ("999", "the body has only 2 bytes")]:
        response = httpx.post(url, content=b"{}", headers={HEADER: value}, timeout=10)
        assert response.status_code == 400 and message in response.json()["error"]
    # a header length that cuts the JSON short
    response = httpx.post(url, content=b'{"inputs": []}', headers={HEADER: "5"}, timeout=10)
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]


def test_bytes_tensors_round_trip() -> None:
    items = [b"", b"abc", "h\u00e9".encode()]
    raw = to_raw("BYTES", np.array(items, dtype=object))
    assert raw[:4] == struct.pack("<I", 0) and raw[4:8] == struct.pack("<I", 3)
    assert list(from_raw("s", "BYTES", (3,), raw)) == items
    with pytest.raises(InvalidInput, match="holds 3 elements but shape \\[2\\] needs 2"):
        from_raw("s", "BYTES", (2,), raw)
    with pytest.raises(InvalidInput, match="inside a 4-byte length prefix"):
        from_raw("s", "BYTES", (1,), b"\x01\x00")


def test_zero_copy_when_aligned_copy_when_not() -> None:
    body = bytearray(64)
    aligned = from_raw("x", "FP32", (4,), memoryview(body)[16:32])
    assert np.shares_memory(aligned, np.frombuffer(body, np.uint8))
    misaligned = from_raw("x", "FP32", (4,), memoryview(body)[17:33])
    assert misaligned.flags.aligned and not np.shares_memory(misaligned, np.frombuffer(body, np.uint8))

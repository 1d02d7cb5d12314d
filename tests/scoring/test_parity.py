"""Batch scores equal the online server's answers bit for bit, for every demo model version.

The same rows go to the real server (``demo_server``) as REST binary tensors (one request)
and as gRPC raw tensors (requests of 40 rows), and through the local engine in batches of
another size (128 rows, parallel threads); every output's bytes must be identical.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from serving.modelconfig import load_config
from serving.scoring.local import BatchOptions, run_local
from tests.scoring.tables import (
    DEMO_VERSIONS,
    column_array,
    feature_names,
    features,
    list_table,
    named_table,
    write,
)
from tests.server_process import DEMO_REPO, ServerProcess

Outputs = dict[str, np.ndarray[Any, Any]]


def online_rest(server: ServerProcess, model: str, version: str, x: np.ndarray[Any, Any]) -> Outputs:
    names = [spec.name for spec in load_config(DEMO_REPO / model / "config.yaml").outputs]
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    try:
        tensor = httpclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=True)
        wanted = [httpclient.InferRequestedOutput(name, binary_data=True) for name in names]
        result = client.infer(model, [tensor], model_version=version, outputs=wanted)
        return {name: result.as_numpy(name) for name in names}
    finally:
        client.close()


def online_grpc(
    server: ServerProcess, model: str, version: str, x: np.ndarray[Any, Any], rows: int
) -> Outputs:
    names = [spec.name for spec in load_config(DEMO_REPO / model / "config.yaml").outputs]
    client = grpcclient.InferenceServerClient(server.grpc_target)
    parts: dict[str, list[np.ndarray[Any, Any]]] = {name: [] for name in names}
    try:
        # Requests of about ``rows`` rows, none smaller (a short last one would take another path).
        for part in np.array_split(x, max(len(x) // rows, 1)):
            chunk = np.ascontiguousarray(part)
            tensor = grpcclient.InferInput("input", list(chunk.shape), "FP32")
            tensor.set_data_from_numpy(chunk)
            result = client.infer(model, [tensor], model_version=version)
            for name in names:
                parts[name].append(result.as_numpy(name))
    finally:
        client.close()
    return {name: np.concatenate(arrays) for name, arrays in parts.items()}


def batch_scores(tmp_path: Path, model: str, version: str, x: np.ndarray[Any, Any], **kwargs: Any) -> Outputs:
    source = write(list_table(x), tmp_path / "in.parquet", row_group_size=100)
    output = tmp_path / "out.parquet"
    run_local(
        BatchOptions(model=model, repo=DEMO_REPO, input=str(source), output=str(output), version=version,
                     input_column="features", batch_rows=128, workers=2, overwrite=True, **kwargs),
        io.StringIO(),
    )  # fmt: skip
    table = pq.read_table(output)
    assert table.column("id").to_pylist() == list(range(len(x)))
    assert set(table.column("model_version").to_pylist()) == {version}
    names = [spec.name for spec in load_config(DEMO_REPO / model / "config.yaml").outputs]
    return {name: column_array(table, name) for name in names}


def assert_identical(batch: Outputs, online: Outputs, where: str) -> None:
    assert batch.keys() == online.keys()
    for name in online:
        assert batch[name].dtype == online[name].dtype, (where, name)
        assert batch[name].shape == online[name].shape, (where, name)
        assert batch[name].tobytes() == online[name].tobytes(), f"{where}: output '{name}' differs"


@pytest.mark.parametrize(("model", "version"), DEMO_VERSIONS)
def test_batch_equals_online_bit_for_bit(
    demo_server: ServerProcess, tmp_path: Path, model: str, version: str
) -> None:
    x = features(model, rows=1000)  # the server's max_batch_size is 1024
    batch = batch_scores(tmp_path, model, version, x)
    assert_identical(batch, online_rest(demo_server, model, version, x), "REST binary")
    assert_identical(batch, online_grpc(demo_server, model, version, x, rows=40), "gRPC raw")
    # Requests below fast_path_max_rows (32) rows to a native booster are answered by its ONNX
    # twin, held by the server to within 1e-6 of the library; ONNX models answer them bit for bit.
    small = online_grpc(demo_server, model, version, x[:24], rows=1)
    for name, values in small.items():
        if load_config(DEMO_REPO / model / "config.yaml").platform == "xgboost":
            assert np.abs(values.astype(np.float64) - batch[name][:24]).max() <= 1e-6, name
        else:
            assert values.tobytes() == batch[name][:24].tobytes(), name


def test_named_float64_columns_cast_as_a_client_would(demo_server: ServerProcess, tmp_path: Path) -> None:
    """Tables usually hold float64; batch casts to the input's FP32 exactly as numpy's astype does."""
    rng = np.random.default_rng(11)
    x64 = rng.normal(scale=100.0, size=(500, 30))  # values that are not float32-exact
    source = write(named_table(x64), tmp_path / "in.parquet")
    output = tmp_path / "out.parquet"
    run_local(BatchOptions(model="cancer-onnx", repo=DEMO_REPO, input=str(source), output=str(output),
                           columns=feature_names(x64)), io.StringIO())  # fmt: skip
    table = pq.read_table(output)
    online = online_rest(demo_server, "cancer-onnx", "1", x64.astype(np.float32))
    assert_identical({n: column_array(table, n) for n in online}, online, "float64 columns")


def test_runtime_threads_stay_within_1e_6(demo_server: ServerProcess, tmp_path: Path) -> None:
    """``--parallel runtime`` gives onnxruntime two intra-op threads. Its tree-ensemble operator
    then splits the trees between threads and adds the partial sums, so a row's float32 sum can
    round differently from the single-threaded order the server uses (1 ulp on a few rows of
    cancer-onnx with onnxruntime 1.2x at 64+ rows). The cause is the thread count alone: the
    same batch through a one-thread session is identical. Held within 1e-6."""
    from serving.scoring.local import runtime_settings
    from serving.scoring.model import open_runtime, resolve_version

    x = features("cancer-onnx", rows=1000)
    online = online_rest(demo_server, "cancer-onnx", "1", x)
    threaded = batch_scores(tmp_path, "cancer-onnx", "1", x, parallel="runtime")
    for name in online:
        assert threaded[name].dtype == online[name].dtype
        gap = np.abs(threaded[name].astype(np.float64) - online[name].astype(np.float64))
        assert gap.max() <= 1e-6, (name, gap.max())
    assert threaded["label"].tobytes() == online["label"].tobytes()
    ref = resolve_version(DEMO_REPO, "cancer-onnx", "1")
    one, two = (open_runtime(ref, runtime_settings(mode, 2)) for mode in ("chunks", "runtime"))
    try:
        chunk = np.ascontiguousarray(x[:128])
        assert (
            one.predict({"input": chunk})["probabilities"].tobytes()
            == online["probabilities"][:128].tobytes()
        )
        gap = np.abs(two.predict({"input": chunk})["probabilities"] - online["probabilities"][:128])
        assert gap.max() <= 1e-6
    finally:
        one.close()
        two.close()

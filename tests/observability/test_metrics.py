"""Metrics on a real server: exposition passes ``promtool check metrics``; the unbatched path
records the stage metrics; access logs are off by default and sampled when asked."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from serving.errors import InvalidInput
from serving.observability.accesslog import AccessLog
from serving.observability.metrics import LATENCY_BUCKETS, Metrics
from tests.observability.bench_metrics import measure
from tests.server_process import DEMO_REPO, ROOT, ServerProcess, free_port, running_server

ROW = [5.1, 3.5, 1.4, 0.2]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def total(text: str, name: str, **labels: str) -> float:
    """Sum of a sample over every series whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, lbls), v in samples(text).items() if n == name and wanted <= lbls)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("repo")
    shutil.copytree(DEMO_REPO / "iris-xgb", repo / "iris-xgb")
    metrics_port = free_port()
    env = {"SERVING_METRICS_PORT": str(metrics_port)}
    with running_server(repo, tmp_path_factory.mktemp("logs"), grpc=False, env=env) as proc:
        proc.metrics_port = metrics_port  # type: ignore[attr-defined]
        yield proc


def infer(url: str, rows: int, model: str = "iris-xgb") -> httpx.Response:
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [rows, 4], "data": [ROW] * rows}]}
    return httpx.post(f"{url}/v2/models/{model}/infer", json=body)


def test_scrape_passes_promtool_and_counts_every_stage(server: ServerProcess, promtool: str) -> None:
    before = httpx.get(f"{server.url}/metrics").text
    rows = [1, 3, 7, 20]
    for n in rows:
        assert infer(server.url, n).status_code == 200
    assert infer(server.url, 1, model="no-such-model").status_code == 404
    bad = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [[1, 2, 3]]}]}
    assert httpx.post(f"{server.url}/v2/models/iris-xgb/infer", json=bad).status_code == 400
    response = httpx.get(f"{server.url}/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4; charset=utf-8")
    text = response.text

    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), (
        check.stdout + check.stderr
    )

    def delta(name: str, **labels: str) -> float:
        return total(text, name, **labels) - total(before, name, **labels)

    labels = {"model": "iris-xgb", "version": "2"}
    assert delta("serving_requests_total", **labels, variant="stable", protocol="rest", outcome="2xx") == 4
    assert delta("serving_requests_total", **labels, outcome="4xx") == 1
    assert delta("serving_rejections_total", model="iris-xgb", reason="invalid") == 1
    assert delta("serving_request_duration_seconds_count", **labels) == 5
    # the unbatched path records the stage metrics: one runtime call per valid request
    assert delta("serving_compute_duration_seconds_count", **labels) == 4
    assert delta("serving_queue_wait_seconds_count", **labels) == 4
    assert delta("serving_batch_size_count", **labels) == 4
    assert delta("serving_batch_size_sum", **labels) == sum(rows)
    assert delta("serving_batch_size_bucket", **labels, le="4.0") == 2
    assert total(text, "serving_queue_depth", **labels) == 0
    assert total(text, "serving_inflight_requests", model="iris-xgb") == 0
    # unknown model names never become label values
    assert "no-such-model" not in text
    # state and load time of every loaded version
    for version in ("1", "2"):
        assert total(text, "serving_model_state", model="iris-xgb", version=version, state="READY") == 1
        assert total(text, "serving_model_state", model="iris-xgb", version=version, state="FAILED") == 0
        assert total(text, "serving_model_load_duration_seconds", model="iris-xgb", version=version) > 0
    # buckets resolve 50 µs to 10 s
    bucket_bounds = {
        dict(lbls)["le"] for (n, lbls) in samples(text) if n == "serving_request_duration_seconds_bucket"
    }
    assert {"5e-05", "10.0", "+Inf"} <= bucket_bounds
    # per-request compute is inside the end-to-end time
    assert delta("serving_compute_duration_seconds_sum", **labels) <= delta(
        "serving_request_duration_seconds_sum", **labels
    )


def test_separate_metrics_port(server: ServerProcess, promtool: str) -> None:
    port = server.metrics_port  # type: ignore[attr-defined]
    assert infer(server.url, 2).status_code == 200
    response = httpx.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    # same values as the REST port's /metrics (no request in between)
    rest = httpx.get(f"{server.url}/metrics").text
    assert (
        total(response.text, "serving_requests_total", model="iris-xgb")
        == total(rest, "serving_requests_total", model="iris-xgb")
        > 0
    )
    check = subprocess.run(
        [promtool, "check", "metrics"], input=response.text, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    head = httpx.head(f"http://127.0.0.1:{port}/metrics")
    assert head.status_code == 200 and int(head.headers["content-length"]) > 0 and head.content == b""
    assert httpx.get(f"http://127.0.0.1:{port}/v2/models/iris-xgb").status_code == 404
    assert httpx.post(f"http://127.0.0.1:{port}/metrics", content=b"").status_code == 405
    # inference is not served here
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [ROW]}]}
    assert httpx.post(f"http://127.0.0.1:{port}/v2/models/iris-xgb/infer", json=body).status_code == 404


def test_access_log_is_off_by_default(server: ServerProcess) -> None:
    assert infer(server.url, 1).status_code == 200
    assert '"log":"access"' not in server.log()


def test_access_log_lines_and_sampling() -> None:
    read_fd, write_fd = os.pipe()
    try:
        draws = iter([0.05, 0.5, 0.2, 0.09])
        log = AccessLog(0.1, fd=write_fd, rand=lambda: next(draws))
        assert log.record("r1", "m", "2", "canary", "rest", "2xx", 0.0012345) is True
        assert log.record("r2", "m", "2", "stable", "rest", "2xx", 0.001) is False
        assert log.record("r3", "m", "2", "stable", "rest", "2xx", 0.001) is False
        error = InvalidInput("input 'x' has shape [1, 3], model expects [-1, 4]")
        assert log.record(None, "m", "none", "stable", "grpc", "INVALID_ARGUMENT", 0.0002, error) is True
        os.close(write_fd)
        write_fd = -1
        with os.fdopen(read_fd, "rb") as pipe:
            read_fd = -1
            lines = pipe.read().splitlines()
    finally:
        for fd in (read_fd, write_fd):
            if fd >= 0:
                os.close(fd)
    first, second = (orjson.loads(line) for line in lines)
    assert first["request_id"] == "r1" and first["variant"] == "canary" and first["status"] == 200
    assert first["duration_ms"] == 1.234 and first["model"] == "m" and first["version"] == "2"
    assert first["protocol"] == "rest" and first["outcome"] == "2xx" and first["pid"] == os.getpid()
    assert first["log"] == "access" and "error" not in first and first["ts"].endswith("+00:00")
    assert second["status"] == 400 and second["outcome"] == "INVALID_ARGUMENT"
    assert second["error"].startswith("input 'x' has shape") and len(second["request_id"]) == 32
    with pytest.raises(ValueError):
        AccessLog(1.5)


def test_exposition_of_an_injected_registry() -> None:
    metrics = Metrics(CollectorRegistry(), multiprocess_dir=None)
    metrics.observe_request("m", "1", "stable", "grpc", "OK", 0.00007)
    metrics.observe_request("m", "1", "stable", "grpc", "OK", 0.3)
    metrics.set_model_state("m", "1", "LOADING")
    text = metrics.exposition().decode()
    assert total(text, "serving_requests_total", model="m", protocol="grpc", outcome="OK") == 2
    assert total(text, "serving_request_duration_seconds_bucket", model="m", le="0.0001") == 1
    assert total(text, "serving_request_duration_seconds_bucket", model="m", le="0.5") == 2
    assert total(text, "serving_model_state", model="m", state="LOADING") == 1
    assert total(text, "serving_model_state", model="m", state="READY") == 0
    assert LATENCY_BUCKETS[0] == 0.00005 and LATENCY_BUCKETS[-1] == 10.0


def test_recording_cost_is_small_next_to_a_request(tmp_path: Path) -> None:
    """observe_request and the stage metrics against a no-op, in single-process and in
    multiprocess (mmap) mode. A request costs hundreds of microseconds; the bounds are
    generous for a busy CI box (docs/guides/observe.md has quiet-machine numbers)."""
    single = measure(calls=5_000, repeats=5)
    assert single["multiprocess"] == 0.0
    assert single["observe_request_ns"] - single["noop_ns"] < 20_000, single
    assert single["stage_metrics_ns"] < 40_000, single
    code = (
        "import json; from tests.observability.bench_metrics import measure; "
        "print(json.dumps(measure(5000, 5)))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    multi = orjson.loads(run.stdout.strip().splitlines()[-1])
    assert multi["multiprocess"] == 1.0
    assert any(name.endswith(".db") for name in os.listdir(tmp_path))
    assert multi["observe_request_ns"] - multi["noop_ns"] < 60_000, multi
    assert multi["stage_metrics_ns"] < 120_000, multi


def test_prediction_series_count_classes_per_version(server: ServerProcess, promtool: str) -> None:
    """iris-xgb answers probabilities [N, 3]: the arg-max class is counted per version and
    variant, one count per row; pinned requests count under their version."""
    before = httpx.get(f"{server.url}/metrics").text
    setosa, virginica = [5.1, 3.5, 1.4, 0.2], [7.7, 3.0, 6.1, 2.3]
    body = {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [3, 4], "data": [setosa, setosa, virginica]}
        ]
    }
    assert httpx.post(f"{server.url}/v2/models/iris-xgb/infer", json=body).status_code == 200
    pinned = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [virginica]}]}
    assert httpx.post(f"{server.url}/v2/models/iris-xgb/versions/1/infer", json=pinned).status_code == 200
    text = httpx.get(f"{server.url}/metrics").text
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    def delta(**labels: str) -> float:
        name = "serving_predictions_total"
        return total(text, name, model="iris-xgb", output="probabilities", **labels) - total(
            before, name, model="iris-xgb", output="probabilities", **labels
        )

    assert delta(version="2", variant="stable", bucket="0") == 2
    assert delta(version="2", variant="stable", bucket="2") == 1
    assert delta(version="2", bucket="1") == 0
    assert delta(version="1", variant="canary", bucket="2") == 1
    assert delta() == 4


def test_prediction_recorder_buckets_scores_and_caps_classes() -> None:
    """Score outputs fall into the config's fixed edges (value <= edge, +Inf past the last,
    NaN too); integer classes past the cap share ``other``; BYTES and 3-D outputs are not counted."""
    import numpy as np

    from serving.observability.predictions import MAX_CLASSES, output_rules

    metrics = Metrics(CollectorRegistry())
    rules = output_rules(
        [
            ("score", "FP32", (-1,)),
            ("label", "INT64", (-1,)),
            ("probs", "FP32", (-1, 4)),
            ("text", "BYTES", (-1,)),
            ("image", "FP32", (-1, 2, 2)),
        ],
        {"score": (0.0, 0.5, 1.0)},
    )
    # probs' arg-max repeats the label: only the label is counted
    assert [(r.name, r.kind) for r in rules] == [("score", "score"), ("label", "class")]
    assert [r.name for r in output_rules([("probs", "FP32", (-1, 4))], {})] == ["probs"]
    rules = (*rules, output_rules([("probs", "FP32", (-1, 4))], {})[0])
    recorder = metrics.prediction_recorder("m", "3", "canary", object(), lambda: rules)
    recorder.record(
        {
            "score": np.array([-1.0, 0.0, 0.2, 0.5, 0.7, 1.0, 3.0, np.nan], dtype=np.float32),
            "label": np.array([0, 1, 1, MAX_CLASSES, -3, 1_000_000]),
            "probs": np.array([[0.1, 0.2, 0.6, 0.1]]),
        }
    )
    recorder.record({"score": np.array([0.3], dtype=np.float32)})  # single row: the fast branch
    text = metrics.exposition().decode()

    def count(output: str, bucket: str) -> float:
        return total(text, "serving_predictions_total", model="m", version="3", output=output, bucket=bucket)

    assert [count("score", b) for b in ("0.0", "0.5", "1.0", "+Inf")] == [2, 3, 2, 2]
    assert [count("label", b) for b in ("0", "1", "other")] == [1, 2, 3]
    assert count("probs", "2") == 1 and count("probs", "0") == 0
    buckets = {dict(lbls)["bucket"] for (n, lbls) in samples(text) if n == "serving_predictions_total"}
    assert len(buckets) <= MAX_CLASSES + 1 + 4  # the documented cap: classes + other, edges + +Inf

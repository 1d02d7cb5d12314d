"""A real Prometheus scrapes a real server under load.

Checks, against the shipped rules and dashboard:
- the scrape target is up and every rule loads and evaluates without error;
- every recording rule and every dashboard panel query returns a finite value;
- Prometheus counts exactly the requests the load generator sent;
- latency quantiles Prometheus computes from the histogram agree with the measured ones.

Tolerance of the quantile check, and why. ``histogram_quantile`` only knows bucket counts:
it finds the bucket holding the rank ``q * n`` and interpolates linearly inside it, so its
answer can sit anywhere in that bucket (buckets here are 2-2.5x wide: 1-2.5-5-10-25-50 ms).
So the tolerance is one bucket, in two comparisons:

1. Against the server's own per-request timings (the access log, sampled at 1.0, carries the
   very ``seconds`` the histogram observed): the estimate must lie inside the bucket that
   holds the exact q-quantile of those timings (widened by the log's 1 µs rounding). Bucketing
   guarantees this, so any miss is a bug in recording, merging, scraping or PromQL.
2. Against the load generator's wall-clock timings: the client also times HTTP, JSON and
   scheduling, which the server histogram does not see, so its quantile is at least the
   server's. The estimate must not lie above the client quantile's bucket, nor below the
   bucket of (client quantile - the client's p99 overhead), the overhead being measured per
   request as client time minus server time (paired by request id).
"""

from __future__ import annotations

import bisect
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from serving.observability.metrics import LATENCY_BUCKETS
from tests.observability.conftest import DASHBOARD, RULES
from tests.observability.prom import running_prometheus
from tests.server_process import DEMO_REPO, running_server
from tests.tinymodels import spec, write_config
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

DEEP_ROWS = (1, 2, 8, 24, 64)
DEEP_ROW_SHARE = (0.4, 0.2, 0.2, 0.15, 0.05)
MAX_REQUESTS = 2500
MAX_SECONDS = 8.0
IRIS_ROW = [[5.1, 3.5, 1.4, 0.2]]


def deep_onnx(width: int = 512, depth: int = 32) -> bytes:
    """x[N, 8] -> 32 x (MatMul 512x512, Tanh) -> y[N, 4]: about 0.2 ms of compute per row, so
    latency grows with rows and spreads over several buckets, while the payload stays tiny."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array((rng.standard_normal((8, width)) / np.sqrt(8)).astype(np.float32), "win"),
        numpy_helper.from_array(
            (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32), "w"
        ),
        numpy_helper.from_array(
            (rng.standard_normal((width, 4)) / np.sqrt(width)).astype(np.float32), "wout"
        ),
    ]
    nodes = [helper.make_node("MatMul", ["x", "win"], ["h0"])]
    for i in range(depth):
        nodes.append(helper.make_node("MatMul", [f"h{i}", "w"], [f"m{i}"]))
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [f"h{i + 1}"]))
    nodes.append(helper.make_node("MatMul", [f"h{depth}", "wout"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "deep",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def build_repo(root: Path) -> Path:
    write_config(
        root / "deep",
        {"platform": "onnx", "inputs": [spec("x", "FP32", [-1, 8])], "outputs": [spec("y", "FP32", [-1, 4])]},
    )
    (root / "deep" / "1").mkdir()
    (root / "deep" / "1" / "model.onnx").write_bytes(deep_onnx())
    iris = yaml.safe_load((DEMO_REPO / "iris-xgb" / "config.yaml").read_text())
    for name, traffic in (
        ("iris", {"weights": {"1": 70, "2": 30}, "stable_version": "1"}),
        ("iris-shadow", {"weights": {"1": 1}, "shadow_version": "2", "shadow_fraction": 1.0}),
    ):
        write_config(root / name, {**iris, "traffic": traffic})
        for version in ("1", "2"):
            shutil.copytree(DEMO_REPO / "iris-xgb" / version, root / name / version)
    # the model-quality rules and panels read iris's drift series: profiles from the iris table
    from sklearn.datasets import load_iris

    from serving.scoring.profiling import profile_version
    from tests.observability.test_monitoring import training_table

    table = training_table(root.parent / "iris.parquet", load_iris(return_X_y=True)[0].astype(np.float32))
    for version in ("1", "2"):
        profile_version(root, "iris", str(table), version=version)
    write_config(root / "broken", iris)  # its only version fails to load: FAILED
    (root / "broken" / "1").mkdir()
    (root / "broken" / "1" / "model.json").write_text('{"not": "a booster"}')
    return root


def bucket_index(seconds: float) -> int:
    """Index of the histogram bucket holding ``seconds`` (``le`` is inclusive)."""
    return bisect.bisect_left(LATENCY_BUCKETS, seconds)


def bucket_bounds(index: int) -> tuple[float, float]:
    lower = LATENCY_BUCKETS[index - 1] if index > 0 else 0.0
    upper = LATENCY_BUCKETS[index] if index < len(LATENCY_BUCKETS) else math.inf
    return lower, upper


def exact_quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


GOOD = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": IRIS_ROW}]}
BAD = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [[1.0, 2.0, 3.0]]}]}


def side_request(client: httpx.Client, grpc: Any, tensor: Any, i: int) -> bool:
    """Canary, shadow, invalid and gRPC traffic, spread over the run so that each new
    series is scraped while it still grows (a counter first seen at its final value has
    no rate). Returns whether a shadowed request was sent."""
    if i % 4 == 0:
        response = client.post("/v2/models/iris/infer", json=GOOD, headers={"x-routing-key": f"user-{i}"})
        assert response.status_code == 200, response.text
    if i % 50 == 2:
        assert client.post("/v2/models/iris/infer", json=BAD).status_code == 400
    if i % 16 == 3:
        grpc.infer("iris", [tensor])
    if i % 8 == 1:
        assert client.post("/v2/models/iris-shadow/infer", json=GOOD).status_code == 200
        return True
    return False


def run_load(url: str, grpc_target: str) -> tuple[dict[str, float], int]:
    """Closed-loop load on ``deep`` (bounded in count and time) with side traffic between
    requests; client seconds per request id, and how many shadowed requests were sent."""
    import tritonclient.grpc as grpcclient

    rng = np.random.default_rng(1)
    bodies = {rows: rng.random((rows, 8), dtype=np.float32).round(4).tolist() for rows in DEEP_ROWS}
    measured: dict[str, float] = {}
    grpc = grpcclient.InferenceServerClient(grpc_target)
    tensor = grpcclient.InferInput("input", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.array(IRIS_ROW, dtype=np.float32))
    deadline = time.monotonic() + MAX_SECONDS
    shadowed = 0
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            for i in range(MAX_REQUESTS):
                if time.monotonic() > deadline:
                    break
                rows = int(rng.choice(DEEP_ROWS, p=DEEP_ROW_SHARE))
                rid = f"q{i}"
                tensor_doc = {"name": "x", "datatype": "FP32", "shape": [rows, 8], "data": bodies[rows]}
                body = orjson.dumps({"id": rid, "inputs": [tensor_doc]})
                start = time.perf_counter()
                response = client.post(
                    "/v2/models/deep/infer", content=body, headers={"content-type": "application/json"}
                )
                elapsed = time.perf_counter() - start
                assert response.status_code == 200, response.text
                measured[rid] = elapsed
                shadowed += side_request(client, grpc, tensor, i)
    finally:
        grpc.close()
    return measured, shadowed


QUEUE_PROXY_PANEL = "503s: Knative queue-proxy beside the server"


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every panel target, with the dashboard's variables set to
    'all models, all versions' and a rate window that covers the load."""
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            expr = (
                target["expr"]
                .replace("$__rate_interval", "1m")
                .replace("$model", ".*")
                .replace("$version", ".*")
            )
            assert "$" not in expr, f"unsubstituted variable in {panel['title']}: {expr}"
            out.append((panel["title"], expr))
    return out


def test_real_prometheus_scrapes_server_rules_and_dashboard(prometheus_bin: str, tmp_path: Path) -> None:
    repo = build_repo(tmp_path / "repo")
    with (
        running_server(
            repo,
            tmp_path / "logs",
            env={
                "SERVING_ACCESS_LOG_SAMPLE_RATE": "1",
                # the payload-logging panels read these series (a few events to local files)
                "SERVING_PAYLOAD_LOG_SAMPLE_RATE": "0.02",
                "SERVING_PAYLOAD_LOG_DIR": str(tmp_path / "payloads"),
            },
        ) as server,
        running_prometheus(
            prometheus_bin, tmp_path / "prom", [f"127.0.0.1:{server.http_port}"], [RULES]
        ) as prom,
    ):
        prom.wait_for('up{job="serving"}', lambda r: r and r[0]["value"][1] == "1", timeout=15)
        measured, shadowed = run_load(server.url, server.grpc_target)
        sent = len(measured)
        assert sent >= 300, f"only {sent} requests in {MAX_SECONDS}s"

        # Prometheus counts exactly the requests sent (after the next scrape).
        count_expr = 'sum(serving_request_duration_seconds_count{model="deep"})'
        prom.wait_for(count_expr, lambda r: r and float(r[0]["value"][1]) == sent, timeout=15)
        assert prom.value('sum(serving_requests_total{model="deep", outcome="2xx"})') == sent

        # Server-side per-request timings from the access log: one line per request.
        server_seconds: dict[str, float] = {}
        for line in server.log().splitlines():
            if line.startswith("{") and '"model":"deep"' in line:
                doc = json.loads(line)
                server_seconds[doc["request_id"]] = doc["duration_ms"] / 1e3
        assert server_seconds.keys() == measured.keys()
        assert all(server_seconds[k] <= measured[k] for k in measured)

        # The client's own share (HTTP, JSON, scheduling), per request: what it adds on top.
        overhead = exact_quantile([measured[k] - server_seconds[k] for k in measured], 0.99)
        report = [f"{sent} requests; client overhead p99 {overhead * 1e3:.3f} ms"]
        for q in (0.5, 0.95, 0.99):
            # wait_for: a scrape that timed out on a loaded machine leaves the series stale
            # for a moment, and an instant query then returns nothing.
            (series,) = prom.wait_for(
                f'histogram_quantile({q}, sum by (le) (serving_request_duration_seconds_bucket{{model="deep"}}))',
                lambda r: len(r) == 1,
                timeout=15,
            )
            estimate = float(series["value"][1])
            exact = exact_quantile(list(server_seconds.values()), q)
            client = exact_quantile(list(measured.values()), q)
            report.append(
                f"p{int(q * 100)}: prometheus {estimate * 1e3:.3f} ms, "
                f"server {exact * 1e3:.3f} ms, client {client * 1e3:.3f} ms"
            )
            # 1. inside the bucket of the exact server-side quantile (1 µs: the log's rounding)
            lower = bucket_bounds(bucket_index(exact - 1e-6))[0]
            upper = bucket_bounds(bucket_index(exact + 1e-6))[1]
            assert lower <= estimate <= upper, "\n".join(report)
            # 2. never above the client quantile's bucket; not below the bucket of the client
            #    quantile less the client's overhead
            lower = bucket_bounds(bucket_index(max(client - overhead, 0.0)))[0]
            upper = bucket_bounds(bucket_index(client))[1]
            assert lower <= estimate <= upper, "\n".join(report)
        print("\n".join(report))
        # the load spreads over buckets, so the three quantiles are not all the same
        assert len({bucket_index(exact_quantile(list(server_seconds.values()), q)) for q in (0.5, 0.99)}) == 2

        # Every rule loads and evaluates cleanly; the target is up, so no target alert.
        groups = httpx.get(f"{prom.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        assert len(rules) == sum(len(g["rules"]) for g in yaml.safe_load(RULES.read_text())["groups"])
        # a scrape and a rule evaluation after the last request
        since = time.time()
        wait_until(lambda: prom.evaluated_after_a_scrape(since), 30, 0.2, "no scrape and evaluation since")
        groups = httpx.get(f"{prom.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        for rule in (rule for group in groups for rule in group["rules"]):
            assert rule["health"] == "ok", rule
        alerts = {(a["metric"]["alertname"], a["metric"].get("model")) for a in prom.query("ALERTS")}
        assert not {name for name, _ in alerts} & {"ServingTargetDown", "ServingTargetsAbsent"}, alerts
        # the real series drive the alerts: the failed version is pending (fires after 5m)
        pending = prom.query('ALERTS{alertname="ServingModelNotReady", alertstate="pending"}')
        assert [(a["metric"]["model"], a["metric"]["version"], a["metric"]["state"]) for a in pending] == [
            ("broken", "1", "FAILED")
        ]

        missing = []
        for rule in (rule for group in groups for rule in group["rules"]):
            if rule["type"] == "recording" and not prom.finite(rule["name"]):
                missing.append(rule["name"])
        assert not missing, f"recording rules without data: {missing}"

        # The queue-proxy 503 panel reads Knative's sidecar and 503s this load never causes; its
        # queries are evaluated over such series in tests/deploy/test_chart.py
        # (test_dashboard_shows_queue_proxy_503s_beside_ours).
        empty = [
            (title, expr)
            for title, expr in dashboard_queries()
            if title != QUEUE_PROXY_PANEL and not prom.finite(expr)
        ]
        assert not empty, f"dashboard queries without data: {empty}"
        assert QUEUE_PROXY_PANEL in {title for title, _ in dashboard_queries()}

        # canary and stable side by side, and shadow comparisons, really are there
        variants = {
            m["variant"] for m, _ in prom.finite('model_variant:serving_requests:rate5m{model="iris"}')
        }
        assert variants == {"stable", "canary"}
        protocols = {m["protocol"] for m, _ in prom.finite('serving_requests_total{model="iris"}')}
        assert protocols == {"rest", "grpc"}
        assert prom.value('sum(serving_shadow_comparisons_total{model="iris-shadow"})') == shadowed

"""Where a REST infer request's time goes inside our process, without a socket.

Builds the real server parts (``serving.server.build``) on the benchmark's 200-tree booster,
then drives the ASGI app directly with an in-memory receive/send, one request at a time, and
times each stage separately:

- ``runtime``: ``Runtime.predict`` called inline (the model alone);
- ``pool``: ``ThreadedPredictor.predict`` forced onto the predict thread pool
  (``inline_budget_us=0``): the runtime plus the hop to a pool thread and back;
- ``predictor``: the version's own predictor as the server builds it (inline on the event loop
  for calls measured under ``Settings.inline_predict_us``);
- ``routing``, ``validation``, ``metrics``: what the router, the signature check and the
  Prometheus updates of one request cost alone (the features the speed issue's 10 % guard
  is about);
- ``timeline``: recording one answered request into the status page's ring buffer
  (serving/observability/timeline.py; part of ``metrics``), printed also as a share of ``asgi``;
- ``predictions``: counting the answer's predicted class / score bin (``serving_predictions_total``,
  serving/observability/predictions.py) alone;
- ``dataplane``: ``DataPlane.infer`` on a decoded request (routing, validation, metrics);
  ``dataplane-off``: the same with the prediction series switched off
  (``SERVING_PREDICTION_METRICS=false``), measured alternately with ``dataplane`` in one run;
- ``asgi``: the whole REST app: body → orjson → numpy → dataplane → orjson → send.

Wall and CPU time per call (process CPU, every thread), so the figures hold on a busy
machine better than throughput does. Run with py-spy for a per-function picture:

    .venv/bin/python loadtests/hotpath.py -n 20000
    .venv/bin/py-spy record -r 1000 -f raw -o prof.txt -- .venv/bin/python loadtests/hotpath.py -n 20000 --only asgi
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import bench  # noqa: E402

from serving.core.validation import validate_inputs  # noqa: E402
from serving.predict.predictor import ThreadedPredictor  # noqa: E402
from serving.protocol.rest import codec  # noqa: E402
from serving.server import build, load_models  # noqa: E402
from serving.settings import Settings  # noqa: E402

STAGES = (
    "runtime",
    "pool",
    "predictor",
    "routing",
    "validation",
    "metrics",
    "timeline",
    "predictions",
    "dataplane",
    "dataplane-off",
    "asgi",
)


async def timed(label: str, n: int, call: Callable[[], Awaitable[Any]]) -> tuple[str, float, float]:
    for _ in range(min(n // 10, 500)):
        await call()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        await call()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return label, wall / n * 1e6, cpu / n * 1e6


async def main_async(args: argparse.Namespace) -> list[tuple[str, float, float]]:
    work = Path(tempfile.mkdtemp(prefix="hotpath-"))
    bench.write_repo(work, heavy=False)
    settings = Settings(model_repo=work / "repo", grpc_port=-1, log_level="warning")
    parts = build(settings)
    load_models(parts)
    parts.dataplane.started = True
    entry = parts.repository.models[args.model].versions["1"]
    assert entry.runtime is not None and entry.predictor is not None
    runtime, predictor = entry.runtime, entry.predictor
    body = bench.json_body(1)
    inputs = {"input": bench.sample_rows(1)}
    scope = {
        "type": "http",
        "method": "POST",
        "path": f"/v2/models/{args.model}/infer",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "query_string": b"",
    }
    message = {"type": "http.request", "body": body, "more_body": False}
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return message

    async def send(event: dict[str, Any]) -> None:
        if event["type"] == "http.response.start":
            statuses.append(event["status"])

    async def call_runtime() -> None:
        runtime.predict(inputs)

    pooled = ThreadedPredictor(runtime, parts.executor)

    async def call_pool() -> None:
        await pooled.predict(inputs, None)

    async def call_predictor() -> None:
        await predictor.predict(inputs, None)

    # What the features of the other issues add to each request, alone:
    model = parts.repository.models[args.model]
    request = codec.decode_request(body, args.model, None, 1 << 20)
    assert entry.config is not None
    config, metrics = entry.config, parts.metrics
    stage = metrics.stage(args.model, "1")
    inflight = metrics.inflight_for(args.model)

    async def call_routing() -> None:
        parts.dataplane.router.select(model, None, None)

    async def call_validation() -> None:
        validate_inputs(config, request)

    async def call_metrics() -> None:
        inflight.inc()
        inflight.dec()
        stage.served(0.0, 1, 7e-6)  # Prometheus children and statistics, as the predictor records
        metrics.observe_request(args.model, "1", "stable", "rest", "2xx", 3e-5)

    series = metrics.timeline.series(args.model, "1")

    async def call_timeline() -> None:
        series.ok(3e-5)

    outputs = runtime.predict(inputs)

    async def call_predictions() -> None:
        parts.dataplane.record_predictions(entry, "stable", outputs)

    async def call_dataplane() -> None:
        parts.dataplane.prediction_metrics = True
        await parts.dataplane.infer(codec.decode_request(body, args.model, None, 1 << 20))

    async def call_dataplane_off() -> None:
        parts.dataplane.prediction_metrics = False
        await parts.dataplane.infer(codec.decode_request(body, args.model, None, 1 << 20))

    async def call_asgi() -> None:
        await parts.rest_app(scope, receive, send)

    stages = {
        "runtime": call_runtime,
        "pool": call_pool,
        "predictor": call_predictor,
        "routing": call_routing,
        "validation": call_validation,
        "metrics": call_metrics,
        "timeline": call_timeline,
        "predictions": call_predictions,
        "dataplane": call_dataplane,
        "dataplane-off": call_dataplane_off,
        "asgi": call_asgi,
    }
    results = []
    for name, call in stages.items():
        if (args.only and name != args.only) or name.startswith("dataplane"):
            continue
        results.append(await timed(name, args.n, call))
    if not args.only or args.only.startswith("dataplane"):
        # On and off alternate in rounds, so machine noise hits both alike; the ratio is the figure.
        on, off = [0.0, 0.0], [0.0, 0.0]
        rounds = 5
        pair = [(on, call_dataplane), (off, call_dataplane_off)]
        for _ in range(rounds):
            pair.reverse()  # neither always goes first
            for acc, call in pair:
                _, wall, cpu = await timed("", args.n // rounds, call)
                acc[0] += wall / rounds
                acc[1] += cpu / rounds
        results.append(("dataplane", on[0], on[1]))
        results.append(("dataplane-off", off[0], off[1]))
        results.append(("on/off", on[0] / off[0], on[1] / off[1]))
    measured = {label: (wall, cpu) for label, wall, cpu in results}
    if "timeline" in measured and "asgi" in measured:
        (tw, tc), (aw, ac) = measured["timeline"], measured["asgi"]
        results.append(("timeline/asgi", tw / aw, tc / ac))
    if statuses and set(statuses) != {200}:
        raise SystemExit(f"the app answered {sorted(set(statuses))}")
    parts.executor.shutdown()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20_000, help="calls per stage")
    parser.add_argument("--only", choices=list(STAGES))
    parser.add_argument("--model", default="bench-onnx", choices=["bench-onnx", "bench-xgb"])
    args = parser.parse_args()
    import uvloop

    results = uvloop.run(main_async(args))
    print(
        f"{'stage':13} {'wall µs':>9} {'cpu µs':>9}   (one request at a time, 1 row, 200-tree booster as {args.model})"
    )
    for label, wall, cpu in results:
        if label == "on/off":
            print(f"{label:13} {wall:9.3f} {cpu:9.3f}   (dataplane with / without prediction series)")
        elif label == "timeline/asgi":
            print(f"{label:13} {wall:9.4f} {cpu:9.4f}   (the status page's ring buffer, share of a request)")
        else:
            print(f"{label:13} {wall:9.1f} {cpu:9.1f}")


if __name__ == "__main__":
    main()

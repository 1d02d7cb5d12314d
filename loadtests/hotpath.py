"""Where a REST infer request's time goes inside our process, without a socket.

Builds the real server parts (``serving.server.build``) on the benchmark's 200-tree booster,
then drives the ASGI app directly with an in-memory receive/send, one request at a time, and
times each stage separately:

- ``runtime``: ``Runtime.predict`` called inline (the model alone);
- ``pool``: ``ThreadedPredictor.predict`` forced onto the predict thread pool
  (``inline_budget_us=0``): the runtime plus the hop to a pool thread and back;
- ``predictor``: the version's own predictor as the server builds it (inline on the event loop
  for calls measured under ``Settings.inline_predict_us``);
- ``check-head``, ``decode``, ``encode``, ``edge``: the REST adapter's steps alone (what is
  decided before the body, JSON into an ``InferenceRequest``, the response into JSON, counting
  the answered request at the edge: metrics, statistics, status page);
- ``routing``, ``validation``, ``metrics``: what the router, the signature check and the
  Prometheus updates of one request cost alone (the features the speed issue's 10 % guard
  is about);
- ``timeline``: recording one answered request into the status page's ring buffer
  (serving/observability/timeline.py; part of ``metrics``), printed also as a share of ``asgi``;
- ``predictions``: counting the answer's predicted class / score bin (``serving_predictions_total``,
  serving/observability/predictions.py) alone;
- ``feedback``: remembering the answer for ground truth (``SERVING_FEEDBACK_RETENTION``, off by
  default; serving/core/feedback.py) alone, a fresh server-made id each time;
- ``dataplane``: ``DataPlane.infer`` on a decoded request (routing, validation, metrics);
  ``dataplane-off``: the same with the prediction series switched off
  (``SERVING_PREDICTION_METRICS=false``), measured alternately with ``dataplane`` in one run;
- ``asgi``: the whole REST app: body → orjson → numpy → dataplane → orjson → send;
- ``http-floor``: the same for the raw-ASGI floor app (``raw_asgi.py``: reads the body, answers
  a fixed one): what uvicorn, httptools and the event loop cost alone;
- ``http-asgi`` / ``http-direct``: the request's bytes fed to the REST listener's HTTP protocol
  (uvicorn's httptools protocol over an in-memory transport) until the response's bytes are
  written: through the ASGI app (``rest_infer_path=asgi``), or answered in the protocol
  itself (``protocol``, serving.protocol.rest.direct). No socket, no kernel: the Python cost
  of one keep-alive request, end to end.
- ``explain``: ``DataPlane.explain`` on one row (the exact contributions of the 200-tree booster;
  for ``bench-onnx`` through the source booster ``serving export`` kept beside it).
- ``monitoring``: model monitoring (serving/observability/monitoring.py) on a version with a
  profile: ``DataPlane.infer`` with the drift monitor on and off, alternately in one run, at
  1 and 64 rows per request. Each "on" round also waits until the monitoring thread has binned
  everything queued, and process CPU counts every thread, so the background work is in the
  figure; "dropped" says whether the bounded queue shed any request.

Wall and CPU time per call (process CPU, every thread), so the figures hold on a busy
machine better than throughput does. Run with py-spy for a per-function picture:

    .venv/bin/python loadtests/hotpath.py -n 20000
    .venv/bin/py-spy record -r 1000 -f raw -o prof.txt -- .venv/bin/python loadtests/hotpath.py -n 20000 --only asgi
    .venv/bin/python loadtests/hotpath.py -n 5000 --rounds 5 --only http-asgi,http-direct
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import gc
import shutil
import statistics
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
import raw_asgi  # noqa: E402
import uvicorn  # noqa: E402
import uvicorn.server  # noqa: E402

from serving.core.feedback import FeedbackStore  # noqa: E402
from serving.core.validation import validate_inputs  # noqa: E402
from serving.predict.predictor import ThreadedPredictor  # noqa: E402
from serving.protocol.rest import codec  # noqa: E402
from serving.protocol.rest.direct import direct_protocol  # noqa: E402
from serving.protocol.rest.inference import Target, encode  # noqa: E402
from serving.protocol.rest.timeouts import timed_protocol  # noqa: E402
from serving.server import build, load_models  # noqa: E402
from serving.settings import Settings  # noqa: E402

STAGES = (
    "runtime",
    "pool",
    "predictor",
    "check-head",
    "decode",
    "routing",
    "validation",
    "metrics",
    "timeline",
    "predictions",
    "feedback",
    "encode",
    "edge",
    "dataplane",
    "dataplane-off",
    "asgi",
    "http-asgi",
    "http-direct",
    "monitoring",
    "explain",
)


class MemoryTransport(asyncio.Transport):
    """A keep-alive connection in memory: ``write`` hands the bytes to whoever waits."""

    def __init__(self) -> None:
        super().__init__()
        self.waiter: asyncio.Future[bytes] | None = None
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:  # type: ignore[override]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def http_caller(protocol_class: type[Any], app: Any, raw: bytes) -> Callable[[], Awaitable[Any]]:
    """One request's bytes into a protocol instance on a memory transport, until its answer."""
    config = uvicorn.Config(app, loop="none", lifespan="off", access_log=False, log_config=None)
    transport = MemoryTransport()
    loop = asyncio.get_running_loop()
    protocol: Any = None

    async def call() -> None:
        nonlocal protocol, transport
        # Connected when the stage starts (its header timer runs from here); connected again
        # when the server closed the idle connection between two rounds (keep-alive timeout).
        if protocol is None or transport.closing:
            transport = MemoryTransport()
            protocol = protocol_class(config=config, server_state=uvicorn.server.ServerState(), app_state={})
            protocol.connection_made(transport)
        transport.waiter = loop.create_future()
        protocol.data_received(raw)
        answer = await transport.waiter
        if not answer.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"the protocol answered {answer[:200]!r}")

    return call


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
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # the generated models (5 MB a run)
    bench.write_repo(work, heavy=False)
    if not args.no_profile:
        write_profile_for(work / "repo", args.model)
    settings = Settings(model_repo=work / "repo", grpc_port=-1, log_level="warning")
    parts = build(settings)
    load_models(parts)
    parts.dataplane.started = True
    # As serving.server does once started: the start-up heap out of the cyclic collector, or
    # its full collections (100+ ms over the loaded frameworks) land on whichever stage
    # allocates most.
    gc.collect()
    gc.freeze()
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

    feedback = FeedbackStore(metrics, 100_000, 3600.0)

    async def call_feedback() -> None:
        parts.dataplane.feedback = feedback
        parts.dataplane.remember(
            entry, codec.decode_request(body, args.model, None, 1 << 20), "stable", outputs
        )
        parts.dataplane.feedback = None

    inference = parts.rest_app.inference
    target = Target(args.model, None, "v2")
    head = {b"content-type": b"application/json", b"content-length": str(len(body)).encode()}

    async def call_decode() -> None:
        inference.decode(body, head, target, 0.0)

    async def call_check_head() -> None:
        inference.check_head("POST", f"/v2/models/{args.model}/infer", target, head)

    answered = await parts.dataplane.infer(codec.decode_request(body, args.model, None, 1 << 20))

    async def call_encode() -> None:
        encode(request, answered, "v2")

    async def call_edge() -> None:
        inference.edge.success(request, answered, 3e-5)

    async def call_dataplane() -> None:
        parts.dataplane.prediction_metrics = True
        await parts.dataplane.infer(codec.decode_request(body, args.model, None, 1 << 20))

    async def call_dataplane_off() -> None:
        parts.dataplane.prediction_metrics = False
        await parts.dataplane.infer(codec.decode_request(body, args.model, None, 1 << 20))

    async def call_asgi() -> None:
        await parts.rest_app(scope, receive, send)

    raw = (
        f"POST /v2/models/{args.model}/infer HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body
    call_http_floor = http_caller(timed_protocol(10, 60), raw_asgi.app, raw)
    call_http_asgi = http_caller(timed_protocol(10, 60), parts.rest_app, raw)
    call_http_direct = http_caller(direct_protocol(parts.rest_app.inference, 10, 60), parts.rest_app, raw)

    async def call_explain() -> None:
        await parts.dataplane.explain(codec.decode_request(body, args.model, None, 1 << 20), 64)

    stages = {
        "explain": call_explain,
        "runtime": call_runtime,
        "pool": call_pool,
        "predictor": call_predictor,
        "check-head": call_check_head,
        "decode": call_decode,
        "routing": call_routing,
        "validation": call_validation,
        "metrics": call_metrics,
        "timeline": call_timeline,
        "predictions": call_predictions,
        "feedback": call_feedback,
        "encode": call_encode,
        "edge": call_edge,
        "dataplane": call_dataplane,
        "dataplane-off": call_dataplane_off,
        "asgi": call_asgi,
        "http-floor": call_http_floor,
        "http-asgi": call_http_asgi,
        "http-direct": call_http_direct,
    }
    results = []
    if "monitoring" in args.only or (not args.only and not args.no_profile):  # needs the profile
        results.extend(await monitoring_rounds(parts, args))
        if args.only == ["monitoring"]:
            parts.executor.shutdown()
            return results
    chosen = [n for n in stages if (not args.only or n in args.only) and not n.startswith("dataplane")]
    for _ in range(args.rounds):  # interleaved: a load change hits every stage alike
        for name in chosen:
            results.append(await timed(name, args.n, stages[name]))
    if not args.only or any(name.startswith("dataplane") for name in args.only):
        # On and off alternate in rounds, so machine noise hits both alike; the ratio is the figure.
        # Many short rounds and their medians: a loaded machine's bursts hit a few rounds, not
        # the figure (five means swung the ratio from 0.95 to 1.30 between runs).
        rounds = 20
        walls: tuple[list[float], list[float]] = ([], [])
        cpus: tuple[list[float], list[float]] = ([], [])
        pair = [(0, call_dataplane), (1, call_dataplane_off)]
        for _ in range(rounds):
            pair.reverse()  # neither always goes first
            for side, call in pair:
                _, wall, cpu = await timed("", max(args.n // rounds, 100), call)
                walls[side].append(wall)
                cpus[side].append(cpu)
        on = [statistics.median(walls[0]), statistics.median(cpus[0])]
        off = [statistics.median(walls[1]), statistics.median(cpus[1])]
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


def write_profile_for(repo: Path, model: str) -> None:
    """A reference profile for the benchmark's model, from 5,000 rows like the ones it is sent."""
    import numpy as np

    from serving.modelconfig import load_config
    from serving.observability.profile import PROFILE_FILE, build_profile, write_profile
    from serving.runtimes.base import load_runtime

    config = load_config(repo / model / "config.yaml")
    x = np.random.default_rng(11).normal(size=(5000, bench.FEATURES)).astype(np.float32)
    runtime = load_runtime(config, repo / model / "1", Settings(model_repo=repo))
    outputs = runtime.predict({config.inputs[0].name: x})
    runtime.close()
    names = [f"f{i}" for i in range(bench.FEATURES)]
    write_profile(build_profile(x, names, outputs, config.inputs[0].name), repo / model / "1" / PROFILE_FILE)


async def monitoring_rounds(parts: Any, args: argparse.Namespace) -> list[tuple[str, float, float]]:
    """DataPlane.infer with the drift monitor on and off, alternating rounds, at 1 and 64 rows."""
    dataplane = parts.dataplane
    monitor = dataplane.monitor
    entry = parts.repository.models[args.model].versions["1"]
    assert monitor is not None and entry.profile is not None, entry.monitoring
    results = []
    for rows in (1, 64):
        body = bench.json_body(rows)

        async def call(body: bytes = body) -> None:
            await dataplane.infer(codec.decode_request(body, args.model, None, 1 << 20))

        async def on_round(n: int, call: Callable[[], Awaitable[None]] = call) -> None:
            dataplane.monitor = monitor
            for _ in range(n):
                await call()
            while monitor.queued():  # the background binning belongs to this round's cost
                time.sleep(0.0005)

        async def off_round(n: int, call: Callable[[], Awaitable[None]] = call) -> None:
            dataplane.monitor = None
            for _ in range(n):
                await call()

        on, off = [0.0, 0.0], [0.0, 0.0]
        rounds = 5
        n = max(args.n // (rounds * (4 if rows > 1 else 1)), 50)
        pair = [(on, on_round), (off, off_round)]
        await on_round(n // 5)  # warm-up
        await off_round(n // 5)
        for _ in range(rounds):
            pair.reverse()
            for acc, run in pair:
                wall, cpu = time.perf_counter(), time.process_time()
                await run(n)
                acc[0] += (time.perf_counter() - wall) / n * 1e6 / rounds
                acc[1] += (time.process_time() - cpu) / n * 1e6 / rounds
        results.append((f"monitor-{rows}", on[0], on[1]))
        results.append((f"unmonitored-{rows}", off[0], off[1]))
        results.append((f"on/off {rows}", on[0] / off[0], on[1] / off[1]))
    dataplane.monitor = monitor
    dropped = sum(
        s.value
        for m in parts.metrics.monitoring_dropped.collect()
        for s in m.samples
        if s.name.endswith("_total")
    )
    results.append(("dropped", dropped, dropped))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20_000, help="calls per stage")
    parser.add_argument(
        "--only", type=lambda v: v.split(","), default=[], help=f"stages, comma-separated: {','.join(STAGES)}"
    )
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds of the stages")
    parser.add_argument("--model", default="bench-onnx", choices=["bench-onnx", "bench-xgb"])
    parser.add_argument(
        "--no-profile",
        action="store_true",
        help="no reference profile, so no drift monitoring (as bench.py's models; monitoring needs one)",
    )
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
        elif label.startswith("on/off "):
            print(f"{label:13} {wall:9.3f} {cpu:9.3f}   (dataplane with / without model monitoring)")
        elif label == "dropped":
            print(f"{label:13} {wall:9.0f} {cpu:9.0f}   (requests the monitoring queue shed)")
        else:
            print(f"{label:13} {wall:9.1f} {cpu:9.1f}")


if __name__ == "__main__":
    main()

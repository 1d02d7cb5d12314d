"""In-process cost of one ``/metrics`` exposition: the fast path (serving/observability/exposition.py)
against prometheus-client's ``generate_latest``, on one registry shaped like a server's with
``--models`` models (alternately two versions and one, as loadtests/many_models.py: 200 models
hold 300 versions).

Each version records what a served version records: one REST request, its stage metrics, its
state, load time, monitoring state, predict paths and one prediction bucket. The two renderers
run alternately (``--rounds`` each, after one warm-up scrape, which builds the fast path's
cached prefixes), each timed twice per round: ``moved``, after every version served one more
request (every request and stage series changed since the last scrape), and ``idle``, right
after (nothing changed: the fast path reuses every cached line); ``fast_first_ms`` is the first
scrape of a new ``FastExposition`` (every prefix built: a server's first scrape). Their outputs are compared
byte for byte, and the medians are printed as one JSON line (``EXPOJSON``) with the load average:

    .venv/bin/python loadtests/metrics_exposition.py --models 200
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

from prometheus_client import generate_latest

from serving.observability.exposition import FastExposition
from serving.observability.metrics import Metrics


def populate(metrics: Metrics, models: int) -> int:
    """Record one served request's series for every version; returns the number of versions."""
    versions = 0
    for i in range(models):
        kind, kept = (("iris-xgb", ("1", "2")), ("cancer-xgb", ("1",)))[i % 2]
        model = f"{kind}-{i}"
        metrics.inflight_for(model)
        for version in kept:
            versions += 1
            metrics.set_model_state(model, version, "READY")
            metrics.model_load_duration.labels(model, version).set(0.021)
            metrics.set_monitoring(model, version, "none")
            metrics.set_predict_paths(model, version, {"small": "onnx-twin", "large": "direct"})
            metrics.observe_request(model, version, "stable", "rest", "2xx", 0.00041)
            metrics.stage(model, version).served(0.00001, 1, 0.00005)
            metrics.predictions.labels(model, version, "stable", "output", "0").inc()
    return versions


def timed(render: Callable[[], bytes]) -> float:
    start = time.perf_counter()
    render()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    metrics = Metrics()
    versions = populate(metrics, args.models)
    registry = metrics.registry
    fast = FastExposition(registry)
    renderers: dict[str, Callable[[], bytes]] = {
        "library": lambda: bytes(generate_latest(registry)),
        "fast": fast,
    }
    load = os.getloadavg()
    text = fast()  # builds the cached prefixes, as the first scrape of a server does
    times: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for name, render in renderers.items():
            populate(metrics, args.models)  # every version served one more request
            times.setdefault(f"{name}_moved_ms", []).append(timed(render))
            times.setdefault(f"{name}_idle_ms", []).append(timed(render))
        times.setdefault("fast_first_ms", []).append(timed(FastExposition(registry)))
    if fast() != generate_latest(registry):
        raise SystemExit("the fast exposition differs from generate_latest")
    medians = {key: round(statistics.median(values) * 1000, 2) for key, values in times.items()}
    summary = {
        "models": args.models,
        "versions": versions,
        "bytes": len(text),
        "lines": text.count(b"\n"),
        **medians,
        "library_over_fast_moved": round(medians["library_moved_ms"] / medians["fast_moved_ms"], 1),
        "library_over_fast_idle": round(medians["library_idle_ms"] / medians["fast_idle_ms"], 1),
        "load_start": [round(x, 2) for x in load],
        "load_end": [round(x, 2) for x in os.getloadavg()],
    }
    print("EXPOJSON " + json.dumps(summary))


if __name__ == "__main__":
    main()

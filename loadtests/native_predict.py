"""Benchmark: native XGBoost predict latency, stock vs ours vs onnxruntime (not a test).

Trains a 200-tree, depth-6, 32-feature binary:logistic booster on synthetic data in a
temporary directory, exports it to ONNX with ``serving.repository.export``, and measures the latency
of one call for 1, 8, 64 and 1000 rows of:

- ``stock``: ``Booster.inplace_predict`` with XGBoost's default threads (all cores)
- ``stock-nthread1``: ``Booster.inplace_predict`` with ``nthread=1``
- ``serving``: ``serving.runtimes.xgboost.XGBoostRuntime.predict`` (what the server runs:
  the ONNX twin below ``fast_path_max_rows``, the direct C call above)
- ``serving-twin``, ``serving-direct``, ``serving-library``: the runtime held to one path
  (the twin at every size, the direct C call, ``inplace_predict`` with fast paths off); the
  row count where twin and direct cross is the default ``fast_path_max_rows``
- ``onnxruntime``: the exported model in an ``InferenceSession`` with one intra-op thread

Each variant runs in several alternating blocks, so that noise from other processes hits
every variant alike; the table gives the median and p99 in microseconds per call.

    .venv/bin/python loadtests/native_predict.py [--rounds 3000] [--csv out.csv]
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import xgboost as xgb

from serving.modelconfig import ModelConfig
from serving.repository.export import export_booster
from serving.runtimes.xgboost import XGBoostRuntime
from serving.settings import Settings

Variant = Callable[[np.ndarray[Any, Any]], Any]


def train(path: Path, trees: int, depth: int, features: int, seed: int) -> xgb.Booster:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(20_000, features)).astype(np.float32)
    logit = x[:, 0] * x[:, 1] + np.sin(x[:, 2]) + 0.5 * x[:, 3:8].sum(axis=1) + rng.normal(size=len(x))
    booster = xgb.train(
        {
            "objective": "binary:logistic",
            "max_depth": depth,
            "eta": 0.1,
            "seed": seed,
            "nthread": os.cpu_count(),
        },
        xgb.DMatrix(x, label=(logit > 0).astype(np.float32)),
        num_boost_round=trees,
    )
    booster.save_model(str(path))
    return booster


def variants(path: Path, repo: Path, features: int) -> dict[str, Variant]:
    stock = xgb.Booster(model_file=str(path))
    single = xgb.Booster(model_file=str(path))
    single.set_param({"nthread": 1})
    config = ModelConfig.model_validate(
        {
            "platform": "xgboost",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, features]}],
            "outputs": [{"name": "probability", "datatype": "FP32", "shape": [-1]}],
        }
    )
    cache = repo.parent / "fastpath-cache"
    runtime = XGBoostRuntime(path, config, Settings(fast_path_cache_dir=cache))
    direct = XGBoostRuntime(path, config, Settings(fast_path_max_rows=0))
    library = XGBoostRuntime(path, config, Settings(fast_path=False))
    twin = XGBoostRuntime(path, config, Settings(fast_path_max_rows=1 << 16, fast_path_cache_dir=cache))
    print(f"# serving paths: {runtime.predict_paths}")
    report = export_booster(path, repo, "bench")
    print(f"# export: {report.describe()}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(report.path), options, providers=["CPUExecutionProvider"])
    return {
        "stock": lambda x: stock.inplace_predict(x),
        "stock-nthread1": lambda x: single.inplace_predict(x),
        "serving": lambda x: runtime.predict({"input": x})["probability"],
        "serving-twin": lambda x: twin.predict({"input": x})["probability"],
        "serving-direct": lambda x: direct.predict({"input": x})["probability"],
        "serving-library": lambda x: library.predict({"input": x})["probability"],
        "onnxruntime": lambda x: session.run(None, {"input": x})[1][:, 1],
    }


def measure(
    fns: dict[str, Variant], x: np.ndarray[Any, Any], rounds: int, blocks: int, budget: float
) -> dict[str, np.ndarray[Any, Any]]:
    """``rounds`` timed calls per variant, in ``blocks`` alternating blocks (A B C D A B C D ...).

    Blocks rather than call-by-call interleaving: after a multi-threaded call, XGBoost's
    OpenMP workers spin for a while and would slow whichever call comes next. A short pause
    and a few untimed calls start each block. ``budget`` seconds bound each variant."""
    reference = fns["stock"](x)
    for name, fn in fns.items():
        diff = float(np.abs(np.asarray(fn(x)) - reference).max())
        if diff > 1e-5:
            raise SystemExit(f"{name} disagrees with stock inplace_predict by {diff}")
    samples: dict[str, list[int]] = {name: [] for name in fns}
    spent = dict.fromkeys(fns, 0.0)
    per_block = max(1, rounds // blocks)
    clock = time.perf_counter_ns
    for _ in range(blocks):
        for name, fn in fns.items():
            if spent[name] > budget:
                continue
            time.sleep(0.05)
            for _ in range(5):
                fn(x)
            block_start = clock()
            for _ in range(per_block):
                start = clock()
                fn(x)
                samples[name].append(clock() - start)
            spent[name] += (clock() - block_start) / 1e9
    return {name: np.array(values) / 1e3 for name, values in samples.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", default="1,8,64,1000", help="comma-separated batch sizes")
    parser.add_argument("--rounds", type=int, default=3000, help="calls per variant for small batches")
    parser.add_argument("--large-rounds", type=int, default=300, help="calls per variant for >= 512 rows")
    parser.add_argument("--blocks", type=int, default=10, help="alternating blocks the rounds are split into")
    parser.add_argument(
        "--budget", type=float, default=20.0, help="seconds at most per variant and batch size"
    )
    parser.add_argument("--trees", type=int, default=200)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--csv", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"# python {platform.python_version()}, xgboost {xgb.__version__}, onnxruntime {ort.__version__}, "
        f"{os.cpu_count()} CPUs, load average {load:.2f}"
    )
    rows_list = [int(r) for r in args.rows.split(",")]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.ubj"
        booster = train(path, args.trees, args.depth, args.features, args.seed)
        print(
            f"# booster: {booster.num_boosted_rounds()} trees, max_depth {args.depth}, {args.features} features"
        )
        fns = variants(path, Path(tmp) / "repo", args.features)
        rng = np.random.default_rng(args.seed + 1)
        print(f"{'rows':>5}  {'variant':<15} {'median µs':>10} {'p99 µs':>10} {'µs/row':>8} {'vs stock':>9}")
        for rows in rows_list:
            x = rng.normal(size=(rows, args.features)).astype(np.float32)
            rounds = args.large_rounds if rows >= 512 else args.rounds
            samples = measure(fns, x, rounds, args.blocks, args.budget)
            stock_median = float(np.median(samples["stock"]))
            for name, values in samples.items():
                median, p99 = float(np.median(values)), float(np.percentile(values, 99))
                results.append(
                    {"rows": rows, "variant": name, "median_us": median, "p99_us": p99, "rounds": rounds}
                )
                print(
                    f"{rows:>5}  {name:<15} {median:>10.1f} {p99:>10.1f} {median / rows:>8.2f} "
                    f"{stock_median / median:>8.2f}x"
                )
    if args.csv:
        with args.csv.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(results[0]))
            writer.writeheader()
            writer.writerows(results)
        print(f"# wrote {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: native LightGBM predict latency, stock vs ours vs onnxruntime (not a test).

Trains a 200-tree, 63-leaf, 32-feature binary booster on synthetic data in a temporary
directory, exports it to ONNX with ``serving.repository.export``, and measures the latency of one call
for 1, 8, 32, 64 and 1000 rows of:

- ``stock``: ``Booster.predict`` with LightGBM's default threads (all cores)
- ``stock-nthread1``: ``Booster.predict(num_threads=1)``
- ``serving``: ``LightGBMRuntime.predict`` as the server runs it (the single-row fast path
  below ``lightgbm_fast_path_max_rows``, ``Booster.predict`` above)
- ``serving-library``: the same runtime with the fast path off (``fast_path=False``): the
  fallback the guard chooses when the fast path disagrees
- ``onnxruntime``: the exported model in an ``InferenceSession`` with one intra-op thread

Variants run in alternating blocks (see ``native_predict.measure``); the table gives the
median and p99 in microseconds per call.

    .venv/bin/python loadtests/native_lightgbm.py [--rounds 2000] [--csv out.csv]
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
from native_predict import Variant, measure

from serving.modelconfig import ModelConfig
from serving.repository.export import export_booster
from serving.runtimes.lightgbm import LightGBMRuntime
from serving.settings import Settings


def train(path: Path, trees: int, leaves: int, features: int, seed: int) -> lgb.Booster:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(20_000, features))
    logit = x[:, 0] * x[:, 1] + np.sin(x[:, 2]) + 0.5 * x[:, 3:8].sum(axis=1) + rng.normal(size=len(x))
    params = {"objective": "binary", "num_leaves": leaves, "learning_rate": 0.1, "seed": seed, "verbose": -1}
    params["num_threads"] = 1  # OpenMP training stalls on a busy shared machine
    booster = lgb.train(params, lgb.Dataset(x, label=(logit > 0).astype(np.float64)), num_boost_round=trees)
    booster.save_model(str(path))
    return booster


def variants(path: Path, repo: Path, features: int) -> dict[str, Variant]:
    stock = lgb.Booster(model_file=str(path))
    config = ModelConfig.model_validate(
        {
            "platform": "lightgbm",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, features]}],
            "outputs": [{"name": "probability", "datatype": "FP64", "shape": [-1]}],
        }
    )
    ours = LightGBMRuntime(path, config, Settings())
    library = LightGBMRuntime(path, config, Settings(fast_path=False))
    print(f"# serving paths: {ours.predict_paths}")
    report = export_booster(path, repo, "bench")
    print(f"# export: {report.describe()}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(report.path), options, providers=["CPUExecutionProvider"])
    return {
        "stock": lambda x: stock.predict(x),
        "stock-nthread1": lambda x: stock.predict(x, num_threads=1),
        "serving": lambda x: ours.predict({"input": x})["probability"],
        "serving-library": lambda x: library.predict({"input": x})["probability"],
        "onnxruntime": lambda x: session.run(None, {"input": x})[1][:, 1],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", default="1,8,32,64,1000", help="comma-separated batch sizes")
    parser.add_argument("--rounds", type=int, default=2000, help="calls per variant for small batches")
    parser.add_argument("--large-rounds", type=int, default=200, help="calls per variant for >= 512 rows")
    parser.add_argument("--blocks", type=int, default=10, help="alternating blocks the rounds are split into")
    parser.add_argument(
        "--budget", type=float, default=10.0, help="seconds at most per variant and batch size"
    )
    parser.add_argument("--trees", type=int, default=200)
    parser.add_argument("--leaves", type=int, default=63)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--csv", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"# python {platform.python_version()}, lightgbm {lgb.__version__}, onnxruntime {ort.__version__}, "
        f"{os.cpu_count()} CPUs, load average {load:.2f}"
    )
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.txt"
        booster = train(path, args.trees, args.leaves, args.features, args.seed)
        print(f"# booster: {booster.num_trees()} trees, {args.leaves} leaves, {args.features} features")
        fns = variants(path, Path(tmp) / "repo", args.features)
        rng = np.random.default_rng(args.seed + 1)
        print(f"{'rows':>5}  {'variant':<16} {'median µs':>10} {'p99 µs':>10} {'µs/row':>8} {'vs stock':>9}")
        for rows in [int(r) for r in args.rows.split(",")]:
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
                    f"{rows:>5}  {name:<16} {median:>10.1f} {p99:>10.1f} {median / rows:>8.2f} "
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

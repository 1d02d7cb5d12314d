"""Benchmark: batch scoring rows/s, side by side in one run (not a test).

The 200-tree, depth-6, 32-feature benchmark booster of ``loadtests/bench.py`` (native, and
exported to ONNX with ``serving.repository.export``) scores a table of ``--rows`` rows (default 1M,
one float32 column per feature plus an id, Parquet in 64k-row groups) through:

- ``direct``: the library itself in a loop over an in-memory array, ``--batch-rows`` rows a
  call, with its default threads (XGBoost ``inplace_predict``, onnxruntime ``run``). The
  floor: no I/O, no Arrow, no validation.
- ``local-chunks``: ``serving batch`` local engine, batches in parallel threads on
  single-threaded runtimes (the default); ``local-runtime``: one batch at a time on the
  runtime's own threads. Both read the Parquet file and write the output file.
- ``server``: ``serving serve`` fed 1,000-row REST binary requests by ``--clients`` threads
  (over the first ``--server-rows`` rows; the rate does not depend on the count).
- ``spark``: ``score_dataframe`` on Spark ``local[2]`` reading the Parquet file and writing
  Parquet (session start excluded; the model loads inside the timed job).

Variants alternate per round (``--rounds``, best of each kept) so the machine's noise hits
all alike. Target: ``local-chunks`` >= 80 % of ``direct``.

    .venv/bin/python loadtests/batch_bench.py [--rows 1000000] [--rounds 2] [--no-spark] [--csv out.csv]
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtests.bench import FEATURES, write_repo  # noqa: E402
from serving.scoring.local import BatchOptions, run_local  # noqa: E402
from tests.server_process import running_server  # noqa: E402

MODELS = {"bench-xgb": "native XGBoost", "bench-onnx": "ONNX (exported)"}


def make_table(path: Path, rows: int) -> np.ndarray[Any, Any]:
    x = np.random.default_rng(7).normal(size=(rows, FEATURES)).astype(np.float32)
    columns: dict[str, Any] = {"id": np.arange(rows, dtype=np.int64)}
    columns.update({f"f{j}": x[:, j] for j in range(FEATURES)})
    pq.write_table(pa.table(columns), path, row_group_size=65536)
    return x


def direct(repo: Path, model: str, x: np.ndarray[Any, Any], batch: int) -> float:
    if model == "bench-xgb":
        import xgboost as xgb

        booster = xgb.Booster(model_file=str(repo / model / "1" / "model.json"))
        call: Callable[[np.ndarray[Any, Any]], Any] = lambda chunk: booster.inplace_predict(chunk)  # noqa: E731
    else:
        import onnxruntime as ort

        session = ort.InferenceSession(
            str(repo / model / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
        )
        call = lambda chunk: session.run(None, {"input": chunk})  # noqa: E731
    call(x[:batch])
    start = time.perf_counter()
    for i in range(0, len(x), batch):
        call(x[i : i + batch])
    return len(x) / (time.perf_counter() - start)


def local(repo: Path, model: str, table: Path, out: Path, batch: int, parallel: str) -> float:
    options = BatchOptions(model=model, repo=repo, input=str(table), output=str(out), batch_rows=batch,
                           columns=[f"f{j}" for j in range(FEATURES)], keep=["id"], overwrite=True,
                           parallel=parallel)  # type: ignore[arg-type]  # fmt: skip
    summary = run_local(options, io.StringIO())
    return summary.rows / summary.seconds


def server(url_port: int, model: str, x: np.ndarray[Any, Any], clients: int) -> float:
    import tritonclient.http as httpclient

    chunks = [np.ascontiguousarray(x[i : i + 1000]) for i in range(0, len(x), 1000)]
    lock = threading.Lock()
    queue = list(range(len(chunks)))

    def work() -> None:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{url_port}")
        try:
            while True:
                with lock:
                    if not queue:
                        return
                    index = queue.pop()
                tensor = httpclient.InferInput("input", list(chunks[index].shape), "FP32")
                tensor.set_data_from_numpy(chunks[index], binary_data=True)
                wanted = [httpclient.InferRequestedOutput("probability" if model == "bench-xgb" else "probabilities",
                                                          binary_data=True)]  # fmt: skip
                client.infer(model, [tensor], outputs=wanted)
        finally:
            client.close()

    threads = [threading.Thread(target=work) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(x) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=65536)
    parser.add_argument("--server-rows", type=int, default=200_000)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-spark", action="store_true")
    parser.add_argument("--csv", type=Path)
    args = parser.parse_args(argv)

    results: dict[tuple[str, str], float] = {}

    def keep(model: str, variant: str, rate: float) -> None:
        results[(model, variant)] = max(rate, results.get((model, variant), 0.0))
        print(f"  {model:10s} {variant:14s} {rate:>12,.0f} rows/s", flush=True)

    with tempfile.TemporaryDirectory(prefix="batch-bench-") as tmp:
        work = Path(tmp)
        write_repo(work, heavy=False)
        repo = work / "repo"
        table = work / "table.parquet"
        x = make_table(table, args.rows)
        print(
            f"{args.rows:,} rows x {FEATURES} features; batch {args.batch_rows:,} rows; {os.cpu_count()} cores"
        )
        spark = None
        if not args.no_spark:
            from pyspark.sql import SparkSession

            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers need this venv
            spark = (
                SparkSession.builder.master("local[2]").appName("batch-bench")
                .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
                .config("spark.driver.memory", "2g").getOrCreate()
            )  # fmt: skip
            spark.sparkContext.setLogLevel("ERROR")
        try:
            for round_ in range(args.rounds):
                print(f"round {round_ + 1}/{args.rounds}", flush=True)
                for model in MODELS:
                    keep(model, "direct", direct(repo, model, x, args.batch_rows))
                    for parallel in ("chunks", "runtime"):
                        keep(model, f"local-{parallel}",
                             local(repo, model, table, work / "out.parquet", args.batch_rows, parallel))  # fmt: skip
                    if spark is not None:
                        from serving.scoring.spark import score_dataframe

                        start = time.perf_counter()
                        scored = score_dataframe(spark.read.parquet(str(table)), model, repo,
                                                 columns=[f"f{j}" for j in range(FEATURES)], keep=["id"])  # fmt: skip
                        scored.write.mode("overwrite").parquet(str(work / "spark-out"))
                        keep(model, "spark-local[2]", args.rows / (time.perf_counter() - start))
                with running_server(repo, work / "logs", grpc=False) as srv:
                    for model in MODELS:
                        server(srv.http_port, model, x[:2000], args.clients)  # warm up
                        keep(
                            model,
                            "server-1000",
                            server(srv.http_port, model, x[: args.server_rows], args.clients),
                        )
        finally:
            if spark is not None:
                spark.stop()

    print("\n| model | variant | rows/s | vs direct |\n|---|---|---:|---:|")
    rows_out = []
    for (model, variant), rate in results.items():
        floor = results[(model, "direct")]
        rows_out.append(
            {"model": model, "variant": variant, "rows_per_s": round(rate), "vs_direct": rate / floor}
        )
        print(f"| {model} ({MODELS[model]}) | {variant} | {rate:,.0f} | {rate / floor:.0%} |")
    if args.csv:
        with args.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows_out[0]))
            writer.writeheader()
            writer.writerows(rows_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

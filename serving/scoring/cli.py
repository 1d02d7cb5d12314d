"""``serving batch``: score a Parquet/CSV table with one model version, locally or on Spark."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from serving.cliflags import add_model_repo, model_repo_or_default
from serving.extras import without_extra


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"'{text}': give comma-separated column names")
    return names


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_batch_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    batch = sub.add_parser(
        "batch",
        help="score a Parquet or CSV table with a model version (local engine or Spark)",
        description="Score a table with the same repository loader, validation and runtimes as the "
        "server; output Parquet with pass-through columns, one column per model output, model_name "
        "and model_version. See docs/batch.md.",
    )
    batch.add_argument("model", help="model name in the repository")
    add_model_repo(batch)
    batch.add_argument("--input", required=True, help="Parquet or CSV file, or a directory of them")
    batch.add_argument(
        "--output", required=True, help="output Parquet file (local engine) or directory (Spark)"
    )
    batch.add_argument("--version", help="version to score with (default: newest the policy serves)")
    features = batch.add_mutually_exclusive_group()
    features.add_argument("--columns", type=_names, help="feature columns, in the model input's order")
    features.add_argument("--input-column", help="one list column holding each row's features")
    batch.add_argument(
        "--keep", type=_names, help="pass-through columns (default: every column that is not a feature)"
    )
    batch.add_argument(
        "--split-outputs",
        action="store_true",
        help="one column per class (probabilities_0, …) instead of a list column",
    )
    batch.add_argument(
        "--nan",
        choices=["auto", "allow", "reject"],
        default="auto",
        help="NaN/infinity in features: allow (XGBoost: missing value), reject (bad row); "
        "auto = allow for xgboost, reject for onnx",
    )
    batch.add_argument(
        "--on-bad-rows",
        choices=["fail", "reject"],
        default="fail",
        help="fail the run (default), or write bad rows with the reason to --rejects",
    )
    batch.add_argument("--rejects", help="Parquet file for rejected rows (with --on-bad-rows reject)")
    batch.add_argument("--batch-rows", type=_positive, default=65536, help="rows per Arrow batch")
    batch.add_argument("--workers", type=_positive, help="threads (default: the machine's cores)")
    batch.add_argument(
        "--parallel",
        choices=["auto", "chunks", "runtime"],
        default="auto",
        help="chunks: batches in parallel on single-threaded runtimes; runtime: one batch at a "
        "time on the runtime's own threads; auto (default): runtime for xgboost, chunks for onnx",
    )
    batch.add_argument(
        "--format",
        dest="input_format",
        choices=["auto", "parquet", "csv"],
        default="auto",
        help="input format (auto: from the file extension)",
    )
    batch.add_argument("--overwrite", action="store_true", help="replace an existing output")
    batch.add_argument(
        "--drift-report",
        metavar="FILE",
        help="also write the drift figures of the scored rows against the version's profile.json "
        "(JSON: PSI per feature and output value, out-of-range and missing counts; local engine)",
    )
    batch.add_argument(
        "--explain",
        action="store_true",
        help="add contrib_<feature> and contrib_bias columns: exact per-feature contributions in the "
        "booster's raw margin (boosters and ONNX versions exported from one; local engine)",
    )
    batch.add_argument(
        "--engine",
        choices=["local", "spark"],
        default="local",
        help="local: this process, in chunks; spark: a Spark job (PySpark, pandas UDFs)",
    )
    batch.add_argument("--master", help="Spark master URL (default local[*], or spark-submit's)")
    batch.add_argument(
        "--progress-interval",
        type=float,
        default=10.0,
        help="seconds between progress lines when not on a terminal",
    )
    batch.set_defaults(func=cmd_batch)


def cmd_batch(args: argparse.Namespace) -> int:
    # pyarrow (and pyspark) are extras, not server dependencies: say which, in one line
    if without_extra("serving batch --engine spark" if args.engine == "spark" else "serving batch"):
        return 2
    from serving.scoring.local import BatchOptions, run_local
    from serving.scoring.model import BatchError

    options = BatchOptions(
        model=args.model,
        repo=model_repo_or_default(args),
        input=args.input,
        output=args.output,
        version=args.version,
        columns=args.columns,
        input_column=args.input_column,
        keep=args.keep,
        split_outputs=args.split_outputs,
        nan=args.nan,
        on_bad_rows=args.on_bad_rows,
        rejects=args.rejects,
        batch_rows=args.batch_rows,
        parallel=args.parallel,
        input_format=args.input_format,
        overwrite=args.overwrite,
        drift_report=args.drift_report,
        explain=args.explain,
    )
    if args.engine == "spark" and (args.drift_report or args.explain):
        print("error: --drift-report and --explain run with --engine local", file=sys.stderr)
        return 1
    if args.workers:
        options.workers = args.workers
    try:
        if args.engine == "spark":
            from serving.scoring.spark import run_spark

            summary = run_spark(options, sys.stderr, args.master)
        else:
            summary = run_local(options, sys.stderr, interval=args.progress_interval)
    except BatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(summary.describe())
    return 0


def add_profile_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    profile = sub.add_parser(
        "profile",
        help="write a version's training reference profile (model monitoring)",
        description="Read the training table as 'serving batch' reads it, predict every row, and "
        "write <model>/<version>/profile.json: per feature and output value its type, quantile bins "
        "and shares, min/max, missing share, category frequencies. A server monitors the version's "
        "input and prediction drift against it. See docs/guides/monitoring.md.",
    )
    profile.add_argument("model", help="model name in the repository")
    add_model_repo(profile)
    profile.add_argument("--data", required=True, help="the training table (Parquet or CSV)")
    profile.add_argument("--version", help="version to profile (default: newest the policy serves)")
    features = profile.add_mutually_exclusive_group()
    features.add_argument("--columns", type=_names, help="feature columns, in the model input's order")
    features.add_argument("--input-column", help="one list column holding each row's features")
    profile.add_argument("--bins", type=_positive, default=10, help="quantile bins per numeric column")
    profile.add_argument("--overwrite", action="store_true", help="replace an existing profile.json")
    profile.set_defaults(func=cmd_profile)


def cmd_profile(args: argparse.Namespace) -> int:
    if without_extra("serving profile"):
        return 2
    from serving.scoring.model import BatchError
    from serving.scoring.profiling import profile_version

    try:
        path, doc = profile_version(
            model_repo_or_default(args),
            args.model,
            args.data,
            version=args.version,
            columns=args.columns,
            input_column=args.input_column,
            bins=args.bins,
            overwrite=args.overwrite,
        )
    except BatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"wrote {path} ({doc['rows']} rows, {len(doc['features'])} features, {len(doc['outputs'])} output values)"
    )
    return 0


def add_demo_data_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser(
        "demo-data",
        help="write a sample table for 'serving batch' (the demo cancer models' features)",
        description="Write a Parquet table from scikit-learn's bundled breast-cancer data, the data "
        "the demo models cancer-xgb, cancer-onnx and cancer-lgbm were trained on: an 'id' column and "
        "the features f0 ... f29, one row per sample (569), or --rows rows (the samples repeated).",
    )
    demo.add_argument(
        "--output", type=Path, default=Path("customers.parquet"), help="the Parquet file to write"
    )
    demo.add_argument("--rows", type=_positive, help="rows to write (default: the 569 samples)")
    demo.add_argument("--overwrite", action="store_true", help="replace an existing file")
    demo.set_defaults(func=cmd_demo_data)


def cmd_demo_data(args: argparse.Namespace) -> int:
    if without_extra("serving demo-data"):
        return 2
    from serving.scoring.demodata import write_demo_table

    try:
        rows = write_demo_table(args.output, args.rows, args.overwrite)
    except OSError as exc:
        print(f"serving: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {rows:,} rows (id, f0 ... f29) to {args.output}")
    return 0

"""The Spark engine: the local engine's per-batch function inside PySpark's ``mapInArrow``.

The driver resolves the version and builds the ``ScoringPlan`` from the DataFrame's schema
(so a bad mapping fails before any task runs); each Python worker loads the version once
with the repository's loader (cached for the worker's life; Spark reuses Python workers by
default) and scores Arrow batches with ``ScoringPlan.score``, the local engine's code, with
the server's single-threaded runtime settings: one runtime call per task slot.

The model repository must be readable by the executors at the same path (local mode, a
shared volume), or ``ship=True`` copies the model's folder with the job (``addFile``).

    from serving.scoring.spark import score_dataframe
    scored = score_dataframe(spark.read.parquet("in/"), "cancer-xgb", "model_repo", columns=[...])
    scored.write.parquet("out/")
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import pyarrow as pa

from serving.runtimes.base import Runtime
from serving.scoring.local import (
    BatchOptions,
    Summary,
    bad_row_error,
    check_outputs,
    input_format,
    runtime_settings,
)
from serving.scoring.model import BatchError, VersionRef, open_runtime, resolve_version
from serving.scoring.plan import NanPolicy, ScoringPlan, build_plan

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

_RUNTIMES: dict[tuple[str, str, str], Runtime] = {}
_RUNTIMES_LOCK = threading.Lock()


def _worker_runtime(ref: VersionRef, shipped: str | None) -> Runtime:
    """This Python worker's runtime for the version, loaded on first use."""
    key = (str(ref.path), ref.model, ref.version)
    with _RUNTIMES_LOCK:
        runtime = _RUNTIMES.get(key)
        if runtime is None:
            if shipped is not None:
                from pyspark import SparkFiles

                ref = replace(ref, path=Path(SparkFiles.get(shipped)) / ref.version)
            runtime = open_runtime(ref, runtime_settings("chunks", 1))
            _RUNTIMES[key] = runtime
    return runtime


class _ScoreArrow:
    """The function ``mapInArrow`` runs: picklable, holding only the plan and where the model is."""

    def __init__(self, plan: ScoringPlan, shipped: str | None) -> None:
        self.plan = plan
        self.shipped = shipped

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        runtime = _worker_runtime(self.plan.ref, self.shipped)
        context = TaskContext.get()
        partition = context.partitionId() if context is not None else 0
        offset = 0
        for batch in batches:
            scored = self.plan.score(runtime, batch, offset, keep_rejects=False)
            if scored.first_bad is not None:
                row, reason = scored.first_bad
                error = bad_row_error((row, reason))
                raise BatchError(f"partition {partition}: {error}")
            offset += batch.num_rows
            yield scored.output


def score_dataframe(
    df: DataFrame,
    model: str,
    repo: str | Path,
    version: str | None = None,
    *,
    columns: Sequence[str] | None = None,
    input_column: str | None = None,
    keep: Sequence[str] | None = None,
    split_outputs: bool = False,
    nan: NanPolicy = "auto",
    ship: bool = False,
) -> DataFrame:
    """Score a Spark DataFrame with one model version; returns the scored DataFrame (lazy).

    The output has the local engine's schema: the pass-through columns, one column per
    model output, ``model_name`` and ``model_version``. A bad row fails the job with its
    reason (row numbers count within the partition). Raises BatchError at once when the
    columns do not fit the model's inputs."""
    from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

    ref = resolve_version(Path(repo), model, version)
    ref = replace(ref, path=ref.path.resolve())
    plan = build_plan(
        ref,
        to_arrow_schema(df.schema),
        columns=columns,
        input_column=input_column,
        keep=keep,
        split_outputs=split_outputs,
        nan=nan,
    )
    shipped = None
    if ship:
        df.sparkSession.sparkContext.addFile(str(ref.path.parent), recursive=True)
        shipped = ref.path.parent.name
    return df.select(*plan.read_columns).mapInArrow(
        _ScoreArrow(plan, shipped), from_arrow_schema(plan.output_schema)
    )


def _spark_message(exc: BaseException) -> str:
    """The BatchError line inside a failed Spark job's Java/Python traceback, if any."""
    text = str(exc)
    for line in text.splitlines():
        if "BatchError: " in line:
            return line.split("BatchError: ", 1)[1].strip()
    return (text.strip().splitlines() or [type(exc).__name__])[0][:300]


def session(master: str | None, app: str) -> tuple[SparkSession, bool]:
    """The running session if there is one (a job that calls us), else a new one; and whether
    it is ours to stop."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active, False
    if master is None or master.startswith("local"):
        # Local Python workers must run this interpreter (with pyarrow and serving installed).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app).config("spark.ui.showConsoleProgress", "false")
    if master is not None:
        builder = builder.master(master)
    elif not os.environ.get("SPARK_HOME"):
        builder = builder.master("local[*]")
    return builder.getOrCreate(), True


def run_spark(options: BatchOptions, stream: TextIO, master: str | None = None) -> Summary:
    """``serving batch --engine spark``: read, score, and write a directory of Parquet files.

    A local output is written to a hidden sibling directory and renamed into place only when
    the job succeeds; other URIs rely on Spark's output committer."""
    check_outputs(options)
    if options.on_bad_rows == "reject":
        raise BatchError("the Spark engine fails on bad rows; --on-bad-rows reject is local-engine only")
    source = Path(options.input)
    if "://" not in options.input and not source.exists():
        raise BatchError(f"input {source} does not exist")
    fmt = input_format(source, options.input_format) if source.exists() else options.input_format
    spark, owned = session(master, f"serving-batch-{options.model}")
    start = time.perf_counter()
    local_output = "://" not in options.output
    target = Path(options.output)
    written = (
        str(target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.tmp") if local_output else options.output
    )
    try:
        reader = spark.read
        df = (
            reader.csv(options.input, header=True, inferSchema=True)
            if fmt == "csv"
            else reader.parquet(options.input)
        )
        scored = score_dataframe(
            df,
            options.model,
            options.repo,
            options.version,
            columns=options.columns,
            input_column=options.input_column,
            keep=options.keep,
            split_outputs=options.split_outputs,
            nan=options.nan,
        )
        scored.write.parquet(written)
        rows = spark.read.parquet(written).count()
    except BatchError:
        _remove(written, local_output)
        raise
    except Exception as exc:  # Py4J and analysis errors carry pages of Java trace: keep the reason
        _remove(written, local_output)
        raise BatchError(f"Spark job failed: {_spark_message(exc)}") from None
    finally:
        if owned:
            spark.stop()
    if local_output:
        old = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.old"
        if target.exists():
            os.replace(target, old)  # the old output stays whole until the new one is in place
        os.replace(written, target)
        if old.is_dir():
            shutil.rmtree(old)
        elif old.exists():
            old.unlink()
    return Summary(rows, 0, time.perf_counter() - start, options.output, None)


def _remove(path: str, local: bool) -> None:
    if local:
        with contextlib.suppress(OSError):
            shutil.rmtree(path)

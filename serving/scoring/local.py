"""The local engine: Parquet/CSV in Arrow record batches -> runtime calls on the machine's cores
-> one Parquet file, written atomically.

Memory stays bounded by the batch size times the batches in flight (read-ahead of two, at
most two per worker), whatever the table's size. Output rows keep the input's order.

Two ways to use the cores (``parallel``); ``loadtests/batch_bench.py`` measures both:

- ``chunks``: ``workers`` threads each score a whole batch with single-threaded
  runtimes (XGBoost ``nthread=1``, one onnxruntime intra-op thread: the server's own online
  configuration). Both libraries release the GIL while predicting, so threads run in
  parallel without the copies worker processes would need.
- ``runtime``: one batch at a time, the runtime's own thread pool spread over the cores.
- ``auto`` (default): ``runtime`` for XGBoost (as fast as ``chunks`` within noise, and XGBoost predicts each
  row on one thread whatever ``nthread`` is, so answers stay bit-identical), ``chunks`` for
  ONNX (onnxruntime's tree ensemble adds per-thread partial sums, see docs/batch.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, TextIO

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from serving import platforms
from serving.observability.profile import DriftCounts
from serving.scoring.model import (
    BatchError,
    VersionRef,
    explanation_names,
    open_runtime,
    resolve_version,
    version_profile,
)
from serving.scoring.plan import NanPolicy, ScoredBatch, ScoringPlan, build_plan
from serving.scoring.progress import Progress
from serving.settings import Settings

Parallel = Literal["auto", "chunks", "runtime"]
BadRows = Literal["fail", "reject"]


@dataclass
class BatchOptions:
    """What ``serving batch`` was asked to do (one object for both engines)."""

    model: str
    repo: Path
    input: str
    output: str
    version: str | None = None
    columns: list[str] | None = None
    input_column: str | None = None
    keep: list[str] | None = None
    split_outputs: bool = False
    nan: NanPolicy = "auto"
    on_bad_rows: BadRows = "fail"
    rejects: str | None = None
    batch_rows: int = 65536
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    parallel: Parallel = "auto"
    input_format: Literal["auto", "parquet", "csv"] = "auto"
    overwrite: bool = False
    drift_report: str | None = None
    """JSON file for the drift figures of the scored rows against the version's profile."""
    explain: bool = False
    """Add ``contrib_<feature>`` and ``contrib_bias`` columns (exact contributions)."""


@dataclass
class Summary:
    rows: int
    rejected: int
    seconds: float
    output: str
    rejects: str | None

    def describe(self) -> str:
        rate = self.rows / self.seconds if self.seconds > 0 else 0.0
        line = f"scored {self.rows:,} rows in {self.seconds:.1f} s ({rate:,.0f} rows/s) -> {self.output}"
        if self.rejects is not None:
            line += f"; {self.rejected:,} rejected -> {self.rejects}"
        return line


def input_format(path: Path, requested: str) -> str:
    if requested != "auto":
        return requested
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    files = [p for p in files if not p.name.startswith((".", "_"))]
    return "csv" if files and all(".csv" in p.suffixes for p in files) else "parquet"


def open_dataset(path_text: str, requested: str = "auto") -> ds.Dataset:
    """A Parquet or CSV file, or a directory of them (files starting with '.' or '_' skipped)."""
    path = Path(path_text)
    if not path.exists():
        raise BatchError(f"input {path} does not exist")
    fmt = input_format(path, requested)
    try:
        dataset = ds.dataset(str(path), format=fmt)
    except (pa.ArrowException, OSError) as exc:
        raise BatchError(f"cannot read {path} as {fmt}: {_first_line(exc)}") from None
    if not dataset.files:
        raise BatchError(f"input {path} holds no {fmt} files")
    return dataset


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def resolve_parallel(parallel: Parallel, platform: str) -> Parallel:
    if parallel != "auto":
        return parallel
    return "runtime" if platforms.get(platform).threads_inside else "chunks"


def runtime_settings(parallel: Parallel, workers: int, base: Settings | None = None) -> Settings:
    """The server's settings (``SERVING_*`` env), with runtime threads fitted to the engine."""
    base = base or Settings()
    # No ONNX twin for small batches (serving/runtimes/fastpath.py): the last batch of a file may
    # be small, and every batch must take the path the server takes for large requests.
    base = base.model_copy(update={"fast_path_max_rows": 0})
    if parallel == "chunks":
        update = {"xgboost_nthread": 1, "xgboost_large_batch_nthread": 1, "onnx_intra_op_threads": 1}
    else:
        update = {"xgboost_large_batch_nthread": workers, "onnx_intra_op_threads": workers}
    return base.model_copy(update=update)


@contextlib.contextmanager
def atomic_parquet(target: Path, schema: pa.Schema) -> Iterator[pq.ParquetWriter]:
    """A writer to a hidden file beside ``target``, renamed over it only when the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"
    writer = pq.ParquetWriter(str(temporary), schema, compression="zstd")
    try:
        yield writer
        writer.close()
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(Exception):
            writer.close()
        temporary.unlink(missing_ok=True)
        raise


def write_drift_report(path: Path, ref: VersionRef, drift: DriftCounts) -> None:
    """The drift figures as JSON, written atomically: what the server's serving_feature_drift
    and serving_prediction_drift would show for a window holding exactly these rows."""
    doc = {"model": ref.model, "version": ref.version, **drift.report()}
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    temporary.write_text(json.dumps(doc, indent=1) + "\n")
    temporary.replace(path)


def prepare(
    options: BatchOptions, dataset_schema: pa.Schema, settings: Settings | None = None
) -> ScoringPlan:
    ref: VersionRef = resolve_version(options.repo, options.model, options.version, settings)
    return build_plan(
        ref,
        dataset_schema,
        columns=options.columns,
        input_column=options.input_column,
        keep=options.keep,
        split_outputs=options.split_outputs,
        nan=options.nan,
    )


def check_outputs(options: BatchOptions) -> None:
    for path in (options.output, options.rejects):
        if path is not None and Path(path).exists() and not options.overwrite:
            raise BatchError(f"{path} exists; pass --overwrite to replace it")
    if options.on_bad_rows == "reject" and options.rejects is None:
        raise BatchError("--on-bad-rows reject needs --rejects PATH")


def bad_row_error(found: tuple[int, str]) -> BatchError:
    row, reason = found
    return BatchError(
        f"bad row {row} (0-based, in input order): {reason}; nothing was written "
        "(--on-bad-rows reject --rejects PATH writes such rows aside instead)"
    )


def run_local(
    options: BatchOptions, stream: TextIO, *, tty: bool | None = None, interval: float = 10.0
) -> Summary:
    """Score ``options.input`` into ``options.output``; raises BatchError with a clear line."""
    check_outputs(options)
    dataset = open_dataset(options.input, options.input_format)
    plan = prepare(options, dataset.schema)
    parallel = resolve_parallel(options.parallel, plan.ref.config.platform)
    settings = runtime_settings(parallel, options.workers)
    total = (
        dataset.count_rows()
        if isinstance(dataset, ds.FileSystemDataset) and dataset.format.default_extname == "parquet"
        else None
    )
    drift = DriftCounts(version_profile(plan.ref)) if options.drift_report is not None else None
    runtime = open_runtime(plan.ref, settings)
    try:
        if drift is not None:
            plan = replace(plan, drift=drift)
        if options.explain:
            width = plan.sources[0].width
            plan = plan.with_explanations(runtime, explanation_names(plan.ref, runtime, width))
    except BaseException:
        runtime.close()
        raise
    threads = options.workers if parallel == "chunks" else 1
    keep_rejects = options.on_bad_rows == "reject"
    progress = Progress(stream, total, tty=tty, interval=interval)
    rejected = 0
    try:
        with (
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="batch") as pool,
            atomic_parquet(Path(options.output), plan.output_schema) as writer,
            (
                atomic_parquet(Path(options.rejects), plan.rejects_schema)
                if keep_rejects and options.rejects is not None
                else contextlib.nullcontext()
            ) as rejects_writer,
        ):
            pending: deque[Future[ScoredBatch]] = deque()

            def drain_one() -> None:
                nonlocal rejected
                scored = pending.popleft().result()
                if scored.first_bad is not None and not keep_rejects:
                    raise bad_row_error(scored.first_bad)
                if scored.output.num_rows:
                    writer.write_batch(scored.output)
                bad = 0
                if scored.rejects is not None and rejects_writer is not None:
                    bad = scored.rejects.num_rows
                    rejects_writer.write_batch(scored.rejects)
                rejected += bad
                progress.update(scored.output.num_rows, bad)

            first_row = 0
            try:
                batches = dataset.to_batches(
                    columns=plan.read_columns,
                    batch_size=options.batch_rows,
                    batch_readahead=2,
                    fragment_readahead=1,
                )
                for batch in batches:
                    if batch.num_rows == 0:
                        continue
                    pending.append(pool.submit(plan.score, runtime, batch, first_row, keep_rejects))
                    first_row += batch.num_rows
                    while len(pending) >= 2 * threads:
                        drain_one()
                while pending:
                    drain_one()
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
    except pa.ArrowException as exc:
        raise BatchError(f"cannot read {options.input}: {_first_line(exc)}") from None
    finally:
        runtime.close()
    seconds = progress.finish()
    if drift is not None and options.drift_report is not None:
        write_drift_report(Path(options.drift_report), plan.ref, drift)
    return Summary(
        progress.rows, rejected, seconds, options.output, options.rejects if keep_rejects else None
    )

"""The local engine: column mapping checked before scoring, bad-row policies, atomic output,
CSV and directory inputs, output layouts, progress, and the CLI's one-line errors."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from serving.cli import main
from serving.scoring.local import BatchOptions, run_local
from serving.scoring.model import BatchError
from serving.scoring.progress import Progress
from tests.scoring.tables import column_array, feature_names, features, list_table, named_table, write
from tests.server_process import DEMO_REPO, ROOT


def options(tmp_path: Path, source: Path, model: str = "cancer-xgb", **kwargs: Any) -> BatchOptions:
    """The demo model's options over ``source``; ``kwargs`` set any other BatchOptions field."""
    return BatchOptions(model=model, repo=DEMO_REPO, input=str(source), output=str(tmp_path / "out.parquet"),
                        **kwargs)  # fmt: skip


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_named_columns_and_list_column_give_the_same_scores(tmp_path: Path) -> None:
    x = features("cancer-xgb")
    named = write(named_table(x), tmp_path / "named.parquet")
    listed = write(list_table(x), tmp_path / "list.parquet")
    a = run_local(options(tmp_path, named, columns=feature_names(x)), io.StringIO())
    by_name = pq.read_table(a.output)
    b = run_local(options(tmp_path, listed, input_column="features", overwrite=True), io.StringIO())
    by_list = pq.read_table(b.output)
    assert a.rows == b.rows == len(x)
    assert by_name.column_names == ["id", "probability", "model_name", "model_version"]
    assert by_name.equals(by_list)
    assert by_name.column("model_name").to_pylist() == ["cancer-xgb"] * len(x)
    assert by_name.column("model_version").to_pylist() == ["1"] * len(x)
    assert by_name.column("id").to_pylist() == list(range(len(x)))  # input order kept


def test_list_output_or_one_column_per_class(tmp_path: Path) -> None:
    x = features("iris-xgb")
    source = write(list_table(x, column="input"), tmp_path / "in.parquet")  # the input's own name
    run_local(options(tmp_path, source, model="iris-xgb", version="1"), io.StringIO())
    listed = pq.read_table(tmp_path / "out.parquet")
    assert listed.schema.field("probabilities").type == pa.list_(pa.float32())
    run_local(options(tmp_path, source, model="iris-xgb", version="1", split_outputs=True, overwrite=True),
              io.StringIO())  # fmt: skip
    split = pq.read_table(tmp_path / "out.parquet")
    assert split.column_names == ["id", "probabilities_0", "probabilities_1", "probabilities_2",
                                  "model_name", "model_version"]  # fmt: skip
    matrix = column_array(listed, "probabilities")
    for k in range(3):
        assert (
            column_array(split, f"probabilities_{k}").tobytes()
            == np.ascontiguousarray(matrix[:, k]).tobytes()
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"columns": ["f0", "f1"]}, "input 'input' [-1, 30] takes 30 features; --columns names 2"),
        ({"columns": [*[f"f{j}" for j in range(29)], "nope"]}, "column 'nope' is not in the input"),
        ({"columns": [*[f"f{j}" for j in range(29)], "name"]}, "column 'name' is string; input 'input' is FP32"),
        ({}, "no column 'input' in the input: name the feature columns with --columns"),
        ({"input_column": "f0"}, "column 'f0' is double; input 'input' [-1, 30] needs a list column"),
        ({"columns": [f"f{j}" for j in range(30)], "keep": ["id", "missing"]},
         "pass-through column 'missing' is not in the input"),
        ({"columns": [f"f{j}" for j in range(30)], "keep": ["probability"]},
         "output columns ['probability'] clash with pass-through columns"),
        ({"columns": [f"f{j}" for j in range(30)], "version": "9"}, "Request for unknown model: 'cancer-xgb' version '9' is not found"),
    ],
)  # fmt: skip
def test_a_bad_mapping_fails_before_scoring(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    x = features("cancer-xgb", rows=20)
    table = (
        named_table(x)
        .append_column("name", pa.array(["a"] * 20))
        .append_column("probability", pa.array(np.zeros(20)))
    )
    source = write(table, tmp_path / "in.parquet")
    with pytest.raises(BatchError) as caught:
        run_local(options(tmp_path, source, **kwargs), io.StringIO())
    assert message in str(caught.value)
    assert not (tmp_path / "out.parquet").exists()
    assert leftovers(tmp_path) == []


def test_a_fixed_size_list_of_the_wrong_width_is_refused(tmp_path: Path) -> None:
    source = write(list_table(features("iris-xgb")), tmp_path / "in.parquet")
    with pytest.raises(BatchError, match="column 'features' holds 4 values per row; input 'input' takes 30"):
        run_local(options(tmp_path, source, input_column="features"), io.StringIO())


def bad_rows_table() -> pa.Table:
    x = features("cancer-onnx", rows=300).astype(np.float64)
    x[5, 3] = np.nan
    x[250, 0] = np.inf
    table = named_table(x)
    f7 = table.column("f7").to_pylist()
    f7[17] = None
    return table.set_column(table.schema.get_field_index("f7"), "f7", pa.array(f7, pa.float64()))


def test_bad_rows_fail_the_run_by_default_and_nothing_is_written(tmp_path: Path) -> None:
    source = write(bad_rows_table(), tmp_path / "in.parquet")
    with pytest.raises(BatchError) as caught:
        run_local(options(tmp_path, source, model="cancer-onnx", columns=[f"f{j}" for j in range(30)],
                          batch_rows=64), io.StringIO())  # fmt: skip
    assert "bad row 5 (0-based, in input order): input 'input' holds NaN or infinity" in str(caught.value)
    assert not (tmp_path / "out.parquet").exists()
    assert leftovers(tmp_path) == []


def test_bad_rows_go_to_the_rejects_file_with_the_reason(tmp_path: Path) -> None:
    source = write(bad_rows_table(), tmp_path / "in.parquet")
    summary = run_local(
        options(tmp_path, source, model="cancer-onnx", columns=[f"f{j}" for j in range(30)], batch_rows=64,
                on_bad_rows="reject", rejects=str(tmp_path / "rejects.parquet")),
        io.StringIO(),
    )  # fmt: skip
    assert (summary.rows, summary.rejected) == (297, 3)
    rejects = pq.read_table(tmp_path / "rejects.parquet").to_pylist()
    assert rejects == [
        {"id": 5, "row": 5, "reason": "input 'input' holds NaN or infinity"},
        {"id": 17, "row": 17, "reason": "column 'f7' is null"},
        {"id": 250, "row": 250, "reason": "input 'input' holds NaN or infinity"},
    ]
    scored = pq.read_table(tmp_path / "out.parquet")
    assert 5 not in scored.column("id").to_pylist() and len(scored) == 297


def test_nan_reaches_xgboost_as_a_missing_value(tmp_path: Path) -> None:
    """XGBoost reads NaN as 'missing' online too, so NaN is allowed for it by default."""
    table = bad_rows_table().drop_columns(["f7"]).append_column("f7", pa.array(np.ones(300)))
    source = write(table, tmp_path / "in.parquet")
    summary = run_local(options(tmp_path, source, columns=[f"f{j}" for j in range(30)]), io.StringIO())
    assert summary.rows == 300
    with pytest.raises(BatchError, match="bad row 5"):
        run_local(options(tmp_path, source, columns=[f"f{j}" for j in range(30)], nan="reject",
                          overwrite=True), io.StringIO())  # fmt: skip


def test_list_rows_with_nulls_or_the_wrong_length_are_bad_rows(tmp_path: Path) -> None:
    rows = [[1.0, 2.0, 3.0, 4.0], None, [1.0, 2.0], [1.0, None, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]
    table = pa.table({"id": list(range(5)), "input": pa.array(rows, pa.list_(pa.float64()))})
    source = write(table, tmp_path / "in.parquet")
    run_local(options(tmp_path, source, model="iris-xgb", on_bad_rows="reject",
                      rejects=str(tmp_path / "rejects.parquet")), io.StringIO())  # fmt: skip
    assert pq.read_table(tmp_path / "rejects.parquet").to_pylist() == [
        {"id": 1, "row": 1, "reason": "column 'input' is null"},
        {"id": 2, "row": 2, "reason": "column 'input' must hold 4 values"},
        {"id": 3, "row": 3, "reason": "column 'input' holds a null"},
    ]
    assert pq.read_table(tmp_path / "out.parquet").column("id").to_pylist() == [0, 4]


def test_csv_and_directory_inputs(tmp_path: Path) -> None:
    x = features("iris-xgb")
    table = named_table(x)
    folder = tmp_path / "csv"
    folder.mkdir()
    pacsv.write_csv(table.slice(0, 80), folder / "a.csv")
    pacsv.write_csv(table.slice(80), folder / "b.csv")
    columns = feature_names(x)
    csv_run = run_local(options(tmp_path, folder, model="iris-xgb", columns=columns), io.StringIO())
    from_csv = pq.read_table(csv_run.output)
    parquet_dir = tmp_path / "pq"
    parquet_dir.mkdir()
    write(table.slice(0, 80), parquet_dir / "part-0.parquet")
    write(table.slice(80), parquet_dir / "part-1.parquet")
    (parquet_dir / "_SUCCESS").write_text("")
    pq_run = run_local(options(tmp_path, parquet_dir, model="iris-xgb", columns=columns, overwrite=True),
                       io.StringIO())  # fmt: skip
    assert csv_run.rows == pq_run.rows == len(x)
    assert from_csv.column("probabilities").equals(pq.read_table(pq_run.output).column("probabilities"))


def test_an_existing_output_is_kept_without_overwrite(tmp_path: Path) -> None:
    source = write(list_table(features("iris-xgb")), tmp_path / "in.parquet")
    (tmp_path / "out.parquet").write_text("yesterday")
    with pytest.raises(BatchError, match="exists; pass --overwrite"):
        run_local(options(tmp_path, source, model="iris-xgb", input_column="features"), io.StringIO())
    assert (tmp_path / "out.parquet").read_text() == "yesterday"


def test_a_read_error_midway_leaves_the_old_output_and_no_partial_file(tmp_path: Path) -> None:
    x = features("iris-xgb")
    folder = tmp_path / "csv"
    folder.mkdir()
    table = named_table(x)
    pacsv.write_csv(table.slice(0, 100), folder / "a.csv")
    (folder / "b.csv").write_text(",".join(table.column_names) + "\n" + "9,oops,1,1,1\n")
    (tmp_path / "out.parquet").write_text("yesterday")
    with pytest.raises(BatchError, match="cannot read"):
        run_local(options(tmp_path, folder, model="iris-xgb", columns=feature_names(x), overwrite=True,
                          batch_rows=16), io.StringIO())  # fmt: skip
    assert (tmp_path / "out.parquet").read_text() == "yesterday"
    assert leftovers(tmp_path) == []


def test_progress_lines_without_a_terminal_and_a_bar_on_one() -> None:
    plain = io.StringIO()
    progress = Progress(plain, 1000, tty=False, interval=0.0)
    progress.update(250)
    assert "250/1,000 rows   25.0%" in plain.getvalue() and "rows/s  ETA 0:00:" in plain.getvalue()
    assert "\r" not in plain.getvalue()
    bar = io.StringIO()
    progress = Progress(bar, 1000, tty=True, redraw=0.0)
    progress.update(500)
    progress.finish()
    assert bar.getvalue().startswith("\r\x1b[K[###############...............]  500/1,000 rows")
    assert bar.getvalue().endswith("\n")


def test_cli_scores_with_progress_and_summary(tmp_path: Path) -> None:
    x = np.tile(features("cancer-xgb"), (200, 1))  # ~115k rows
    source = write(named_table(x), tmp_path / "in.parquet", row_group_size=8192)
    out = tmp_path / "scores.parquet"
    proc = subprocess.run(
        [sys.executable, "-m", "serving.cli", "batch", "cancer-xgb", "--repo", str(DEMO_REPO),
         "--input", str(source), "--output", str(out), "--keep", "id", "--batch-rows", "4096",
         "--columns", ",".join(feature_names(x)), "--progress-interval", "0"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"scored {len(x):,} rows in" in proc.stdout and str(out) in proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) > 3 and all("rows/s" in line and "ETA" in line for line in lines), lines[:5]
    assert pq.read_metadata(out).num_rows == len(x)


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write(list_table(features("iris-xgb")), tmp_path / "in.parquet")
    code = main(["batch", "nope", "--repo", str(DEMO_REPO), "--input", str(source), "--output",
                 str(tmp_path / "o.parquet")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert err == f"error: Request for unknown model: 'nope' is not found (no folder in {DEMO_REPO})\n"
    code = main(["batch", "iris-xgb", "--input", str(tmp_path / "missing.parquet"), "--output", "o.parquet"])
    assert (
        code == 1
        and capsys.readouterr().err == f"error: input {tmp_path / 'missing.parquet'} does not exist\n"
    )


def test_a_repository_outside_the_working_directory_loads_and_stays_confined(tmp_path: Path) -> None:
    """The run's --repo, not the server's default ``model_repo``, is the root the runtime's files
    must stay in (a found regression: every repository but ./model_repo was refused)."""
    repo = tmp_path / "elsewhere"
    shutil.copytree(DEMO_REPO / "cancer-xgb", repo / "cancer-xgb")
    x = features("cancer-xgb")
    source = write(list_table(x), tmp_path / "in.parquet")
    done = run_local(replace(options(tmp_path, source, input_column="features"), repo=repo), io.StringIO())
    assert done.rows == len(x) and pq.read_table(done.output).num_rows == len(x)
    # a version folder that links out of the run's repository is refused, as the server refuses it
    (repo / "cancer-xgb" / "2").symlink_to(DEMO_REPO / "cancer-xgb" / "1")
    escaped = replace(options(tmp_path, source, input_column="features"), repo=repo, version="2")
    escaped.output = str(tmp_path / "escaped.parquet")
    with pytest.raises(BatchError, match="resolves outside the model repository"):
        run_local(escaped, io.StringIO())
    assert not (tmp_path / "escaped.parquet").exists()

"""The Spark engine on a local Spark (``local[2]``, Debian's OpenJDK) gives exactly the local
engine's output for every demo model version: same schema, same bytes. One SparkSession for
the module, small tables."""

from __future__ import annotations

import io
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serving.scoring.local import BatchOptions, run_local
from serving.scoring.model import BatchError
from tests.scoring.tables import DEMO_VERSIONS, feature_names, features, list_table, named_table, write
from tests.server_process import DEMO_REPO

if not shutil.which("java") and not os.environ.get("JAVA_HOME"):
    pytest.fail("java is missing: scripts/test.sh installs Debian's openjdk-17-jre-headless", pytrace=False)


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers need this venv's packages
    session = (
        SparkSession.builder.master("local[2]")
        .appName("serving-batch-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.driver.memory", "1g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def local_output(tmp_path: Path, source: Path, model: str, version: str, **kwargs: Any) -> pa.Table:
    output = tmp_path / "local.parquet"
    run_local(BatchOptions(model=model, repo=DEMO_REPO, input=str(source), output=str(output), version=version,
                           overwrite=True, **kwargs), io.StringIO())  # fmt: skip
    return pq.read_table(output)


def same_table(spark_table: pa.Table, local_table: pa.Table) -> None:
    spark_table = spark_table.sort_by("id")
    assert [(f.name, f.type) for f in spark_table.schema] == [(f.name, f.type) for f in local_table.schema]
    # Spark marks every column nullable and adds its own schema metadata; the values must match exactly.
    assert spark_table.cast(local_table.schema).equals(local_table)


@pytest.mark.parametrize(("model", "version"), DEMO_VERSIONS)
def test_spark_equals_the_local_engine(spark: Any, tmp_path: Path, model: str, version: str) -> None:
    from serving.scoring.spark import score_dataframe

    x = features(model, rows=400)
    source = write(list_table(x), tmp_path / "in.parquet")
    df = spark.read.parquet(str(source)).repartition(3)
    scored = score_dataframe(df, model, DEMO_REPO, version, input_column="features")
    scored.write.parquet(str(tmp_path / "spark"))
    same_table(pq.read_table(tmp_path / "spark"), local_output(tmp_path, source, model, version,
                                                               input_column="features"))  # fmt: skip


def test_named_columns_and_split_outputs(spark: Any, tmp_path: Path) -> None:
    from serving.scoring.spark import score_dataframe

    x = features("digits-mlp", rows=300)
    source = write(named_table(x), tmp_path / "in.parquet")
    scored = score_dataframe(spark.read.parquet(str(source)), "digits-mlp", str(DEMO_REPO),
                             columns=feature_names(x), keep=["id"], split_outputs=True)  # fmt: skip
    scored.write.parquet(str(tmp_path / "spark"))
    local = local_output(tmp_path, source, "digits-mlp", "1", columns=feature_names(x), keep=["id"],
                         split_outputs=True)  # fmt: skip
    assert "probabilities_9" in local.column_names
    same_table(pq.read_table(tmp_path / "spark"), local)


def test_a_bad_mapping_fails_on_the_driver(spark: Any, tmp_path: Path) -> None:
    from serving.scoring.spark import score_dataframe

    source = write(named_table(features("iris-xgb")), tmp_path / "in.parquet")
    with pytest.raises(BatchError, match="input 'input' \\[-1, 4\\] takes 4 features; --columns names 2"):
        score_dataframe(spark.read.parquet(str(source)), "iris-xgb", DEMO_REPO, columns=["f0", "f1"])


def test_cli_spark_engine_writes_atomically_and_fails_clearly(spark: Any, tmp_path: Path) -> None:
    """``serving batch --engine spark`` reuses the running session (and leaves it running)."""
    from serving.scoring.spark import run_spark

    x = features("cancer-onnx", rows=200).astype("float64")
    x[42, 0] = float("nan")
    source = write(named_table(x), tmp_path / "in.parquet")
    options = BatchOptions(model="cancer-onnx", repo=DEMO_REPO, input=str(source),
                           output=str(tmp_path / "out"), columns=feature_names(x))  # fmt: skip
    with pytest.raises(
        BatchError, match=r"Spark job failed: partition 0: bad row 42 .*holds NaN or infinity"
    ):
        run_spark(options, io.StringIO())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]  # nothing half-written
    options.nan = "allow"
    summary = run_spark(options, io.StringIO())
    assert summary.rows == 200
    assert pq.read_table(tmp_path / "out").num_rows == 200
    assert spark.range(3).count() == 3  # the caller's session still works

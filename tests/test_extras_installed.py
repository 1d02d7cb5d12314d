"""Each extra installed alone, as a user installs it: an environment holding only the runtime lock
plus that one extra (requirements/<extra>.txt, hashes checked), the checkout on its path, and the
extra's command run there. The test environment has every extra, so a dependency an extra lacks
(the spark extra once lacked pandas) shows only here.

The environments are kept between runs (``extra_environment``) and made exact again each time
with ``uv pip sync`` (about a second each);
the Spark run needs a JVM (scripts/test.sh installs one; CI fails without it)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server_process import DEMO_REPO, ROOT

COLUMNS = ",".join(f"f{j}" for j in range(30))


class Env:
    def __init__(self, python: Path, home: Path) -> None:
        self.python, self.home = python, home

    def serving(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env |= {"PYTHONPATH": str(ROOT), "HOME": str(self.home)}  # no kubeconfig of the machine
        return subprocess.run(
            [str(self.python), "-m", "serving.cli", *args],
            capture_output=True,
            text=True,
            cwd=self.home,
            env=env,
            timeout=timeout,
        )


def extra_environment(uv: Path, extra: str) -> Path:
    """The Python of an environment holding exactly requirements/<extra>.txt (``uv pip sync``:
    anything else is removed), kept between runs in the user's cache folder under the lock's
    hash: PySpark is a source distribution that uv builds again whenever its cache entry was
    refreshed (a minute), so a new environment per run would cost that each time."""
    lock = ROOT / "requirements" / f"{extra}.txt"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "serving-extras"
    cache.mkdir(parents=True, exist_ok=True)
    venv = cache / f"{extra}-{digest}"
    python = venv / "bin" / "python"
    with (cache / f"{extra}.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another test run may be syncing the same one
        if not python.exists():
            subprocess.run(
                [str(uv), "venv", "--quiet", "--python", sys.executable, str(venv)], check=True, timeout=120
            )
        subprocess.run(
            [str(uv), "pip", "sync", "--quiet", "--python", str(python), "--require-hashes", str(lock)],
            check=True,
            timeout=900,
        )
    return python


@pytest.fixture(scope="module")
def environments(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Env]:
    uv = Path(sys.prefix) / "bin" / "uv"
    root = tmp_path_factory.mktemp("extras")
    made: dict[str, Env] = {}
    for extra in ("batch", "spark", "rollout", "export"):
        (root / extra).mkdir()
        made[extra] = Env(extra_environment(uv, extra), root / extra)
    return made


def test_the_batch_extra_alone_scores_the_sample_table(environments: dict[str, Env]) -> None:
    env = environments["batch"]
    made = env.serving("demo-data", "--output", "t.parquet")
    assert made.returncode == 0, made.stderr
    scored = env.serving(
        "batch", "cancer-xgb", "--model-repo", str(DEMO_REPO), "--input", "t.parquet",
        "--output", "s.parquet", "--columns", COLUMNS,
    )  # fmt: skip
    assert scored.returncode == 0 and scored.stdout.startswith("scored 569 rows"), scored.stderr
    # alone: Spark is another extra, and the command says which
    spark = env.serving("batch", "cancer-xgb", "--engine", "spark", "--input", "t.parquet", "--output", "x")
    assert spark.returncode == 2 and "needs the 'spark' extra" in spark.stderr


def test_the_spark_extra_alone_scores_on_spark(environments: dict[str, Env]) -> None:
    if shutil.which("java") is None:
        if os.environ.get("CI"):
            pytest.fail("no java: scripts/test.sh installs openjdk-17-jre-headless")
        pytest.skip("no java on this machine (scripts/test.sh installs it)")
    env = environments["spark"]
    assert env.serving("demo-data", "--output", "t.parquet").returncode == 0
    scored = env.serving(
        "batch", "cancer-xgb", "--model-repo", str(DEMO_REPO), "--input", "t.parquet",
        "--output", "scores", "--columns", COLUMNS, "--engine", "spark", "--master", "local[1]",
        timeout=300,
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert "569 rows" in scored.stdout and list((env.home / "scores").glob("*.parquet"))


def test_the_rollout_extra_alone_reaches_for_a_cluster(environments: dict[str, Env]) -> None:
    """With the Kubernetes client installed, a rollout on an InferenceService gets as far as
    looking for a cluster (none here): one line, the rollout error status."""
    status = environments["rollout"].serving("rollout", "status", "iris", "--mode", "knative")
    assert status.returncode == 3, status.stderr
    lines = (status.stdout + status.stderr).strip().splitlines()
    assert len(lines) == 1 and "no Kubernetes cluster to talk to" in lines[0], lines


def test_the_export_extra_alone_exports_a_booster(environments: dict[str, Env]) -> None:
    env = environments["export"]
    booster = DEMO_REPO / "cancer-xgb" / "1" / "model.json"
    done = env.serving("export", str(booster), "--model", "m", "--model-repo", "repo")
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stderr
    assert (env.home / "repo" / "m" / "1" / "model.onnx").is_file()
    # and the demo models, which need scikit-learn's data and skl2onnx
    assert "needs the" not in env.serving("demo-models", "--help").stderr

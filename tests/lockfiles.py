"""Reading the lock files in requirements/ (written by scripts/lock.sh) in tests."""

from __future__ import annotations

import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements"


def pins(path: Path, environment: dict[str, str] | None = None) -> dict[str, str]:
    """Canonical name -> pinned version, for the entries whose markers hold in ``environment``
    (default: this interpreter)."""
    found: dict[str, str] = {}
    for entry in re.split(r"\n(?=\S)", path.read_text()):
        if not entry or entry.startswith("#"):
            continue
        requirement = Requirement(entry.split("\\", 1)[0].strip())
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"{path.name}: {requirement} is not pinned"
        found[canonicalize_name(requirement.name)] = spec.version
    return found


def hashes(path: Path) -> dict[tuple[str, str], set[str]]:
    """(canonical name, version) -> the sha256 hashes the lock allows, for every entry."""
    found: dict[tuple[str, str], set[str]] = {}
    for entry in re.split(r"\n(?=\S)", path.read_text()):
        if not entry or entry.startswith("#"):
            continue
        requirement = Requirement(entry.split("\\", 1)[0].strip())
        (spec,) = requirement.specifier
        key = (canonicalize_name(requirement.name), spec.version)
        found[key] = set(re.findall(r"--hash=sha256:([0-9a-f]{64})", entry))
    return found

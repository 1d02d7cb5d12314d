"""The one way tests find reference files the project reads but never copies in: KServe's CRDs,
OIP specs and protos (``kserve/``), Triton's protos (``triton/``).

They live in ``$SERVING_REFERENCE_DIR``, by default ``../shared`` beside the checkout. When a
file is missing, the test that needs it is skipped with the reason, except under CI (``CI`` set),
where a missing reference fails the run: CI must never pass by skipping the checks against KServe.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ENV = "SERVING_REFERENCE_DIR"
REPORT_ENV = "SERVING_REFERENCE_REPORT"
"""A file the test run writes its one line about skipped reference checks to (scripts/test.sh
prints it last)."""
SKIP_REASON = "reference file "
ROOT = Path(__file__).resolve().parent.parent


def reference_dir() -> Path:
    return Path(os.environ.get(ENV) or ROOT.parent / "shared")


def reference(relative: str, module_level: bool = False) -> Path:
    """``reference("kserve/crd_inferenceservices.yaml")``: the file's path, or skip (fail under CI).
    ``module_level`` when called while a test module is imported (collection time)."""
    path = reference_dir() / relative
    if path.exists():
        return path
    reason = (
        f"{SKIP_REASON}{relative} not found in {reference_dir()} "
        f"(set {ENV} to the folder holding kserve/ and triton/)"
    )
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI requires the reference files", pytrace=False)
    pytest.skip(reason, allow_module_level=module_level)


def is_reference_skip(report: pytest.TestReport) -> bool:
    """A test skipped by ``reference`` (its reason starts with SKIP_REASON)."""
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr or "")
    return report.skipped and reason.removeprefix("Skipped: ").startswith(SKIP_REASON)


def summary_line(skipped: int) -> str:
    """How many reference checks were skipped and why, in one line."""
    if not skipped:
        where = reference_dir()
        return (
            f"reference checks: none skipped (reference folder {where}{'' if where.is_dir() else ', absent'})"
        )
    return (
        f"reference checks: {skipped} skipped, because {reference_dir()} holds no reference files "
        f"(KServe's CRDs and OIP spec, Triton's protos; a clone has none: set {ENV} to run them, "
        "as CI does)"
    )

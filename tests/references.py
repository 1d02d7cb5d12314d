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
        f"reference file {relative} not found in {reference_dir()} "
        f"(set {ENV} to the folder holding kserve/ and triton/)"
    )
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI requires the reference files", pytrace=False)
    pytest.skip(reason, allow_module_level=module_level)

"""Optional features and the extra that installs each, so a command whose extra is missing says
what to install in one line instead of failing with a traceback on its first import.

The runtime install (the image, the README's first command) has neither extra: `serving serve`
needs none of them.
"""

from __future__ import annotations

import sys
from importlib.util import find_spec

NEEDS: dict[str, tuple[str, tuple[str, ...]]] = {
    # command -> (extra, the modules it imports from that extra)
    # booster -> ONNX (onnxmltools is also a runtime dependency today: the XGBoost twin)
    "serving export": ("export", ("onnxmltools",)),
    # the demo models are trained on scikit-learn's bundled data and exported with skl2onnx
    "serving demo-models": ("export", ("sklearn", "skl2onnx", "onnxmltools")),
    # canaries on InferenceServices: the Kubernetes API client
    "serving rollout": ("rollout", ("kubernetes",)),
    # tables in and out: Arrow and Parquet (the batch image has it: requirements/batch.txt)
    "serving batch": ("batch", ("pyarrow",)),
    # the training table is read as serving batch reads it
    "serving profile": ("batch", ("pyarrow",)),
    # the sample table: scikit-learn's bundled data (in the runtime lock, via the exporters), Parquet
    "serving demo-data": ("batch", ("pyarrow", "sklearn")),
    # pandas: PySpark's pandas UDFs import it at run time without declaring it
    "serving batch --engine spark": ("spark", ("pyarrow", "pyspark", "pandas")),
}


def missing_extra(command: str) -> str | None:
    """None when ``command`` can import what it needs, else the one line to show."""
    extra, modules = NEEDS[command]
    absent = [module for module in modules if find_spec(module) is None]
    if not absent:
        return None
    return (
        f"{command} needs the '{extra}' extra ({', '.join(absent)} not installed): "
        f"pip install 'serving[{extra}]' (in a checkout: bash scripts/install.sh {extra})"
    )


def without_extra(command: str) -> bool:
    """Print the one line naming the missing extra and return True (the command then exits 2),
    or return False when ``command`` can import what it needs."""
    problem = missing_extra(command)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
    return problem is not None

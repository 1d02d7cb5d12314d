"""Import XGBoost without scikit-learn.

XGBoost's ``compat`` module imports scikit-learn whenever it is installed, for the
``XGBClassifier``-style wrappers, and scikit-learn brings SciPy's and its own modules: measured
1.46 s of CPU and 202 MB resident for ``import xgboost`` against 0.31 s and 61 MB without it.
The runtime only uses ``Booster`` (and the ONNX twin's converter, which imports scikit-learn
itself when a twin is built), so the server hides scikit-learn while XGBoost is imported; a
process that imported scikit-learn already keeps its XGBoost wrappers as they were.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def hidden_sklearn() -> Iterator[None]:
    """Inside, ``import sklearn`` fails (as if not installed) unless it was imported before."""
    if "sklearn" in sys.modules:
        yield
        return
    sys.modules["sklearn"] = None  # type: ignore[assignment]  # the import system's "not found"
    try:
        yield
    finally:
        if sys.modules.get("sklearn", 0) is None:
            del sys.modules["sklearn"]

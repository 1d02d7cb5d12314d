"""Exact tree explanations from the boosters themselves: XGBoost's ``pred_contribs`` and
LightGBM's ``pred_contrib`` (TreeSHAP, computed by the libraries in C++).

Contributions are in the raw margin, before the objective's transform (a binary classifier's
log-odds, a multiclass booster's per-class margins): they and the bias add up to the margin,
which the explanation carries so callers can check it. Explaining costs many predictions
(TreeSHAP walks each tree per feature): the server bounds rows per call
(``explain_max_rows``) and runs it on a thread.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from serving.inference import Array
from serving.runtimes.base import SOURCE_BOOSTER_FILES, Explanation

_DEFAULT_LGB_NAME = re.compile(r"^Column_\d+$")


def xgboost_explain(booster: Any, x: Array) -> Explanation:
    import xgboost as xgb

    matrix = xgb.DMatrix(np.asarray(x, dtype=np.float32), missing=np.nan)
    contribs = np.asarray(booster.predict(matrix, pred_contribs=True, validate_features=False))
    margin = np.asarray(booster.predict(matrix, output_margin=True, validate_features=False))
    return Explanation(contribs[..., :-1], contribs[..., -1], margin)


def lightgbm_explain(booster: Any, x: Array) -> Explanation:
    x = np.asarray(x, dtype=np.float64)
    contribs = np.asarray(booster.predict(x, pred_contrib=True, num_threads=1))
    margin = np.asarray(booster.predict(x, raw_score=True, num_threads=1))
    classes = booster.num_model_per_iteration()
    if classes > 1:  # [N, K * (F + 1)] -> [N, K, F + 1]
        contribs = contribs.reshape(len(x), classes, -1)
    return Explanation(contribs[..., :-1], contribs[..., -1], margin)


def xgboost_names(booster: Any) -> list[str] | None:
    names = booster.feature_names
    return list(names) if names else None


def lightgbm_names(booster: Any) -> list[str] | None:
    names = list(booster.feature_name())
    return None if all(_DEFAULT_LGB_NAME.match(n) for n in names) else names


class SourceBooster:
    """The booster an exported ONNX version was made from (``booster.json|ubj|txt`` beside
    ``model.onnx``): the ONNX runtime explains through it. Calls are serialised (explain
    requests are few; the libraries' predict with contributions is not documented as
    thread-safe)."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        if path.suffix == ".txt":
            import lightgbm as lgb

            self._booster: Any = lgb.Booster(model_file=str(path))
            self.feature_names = lightgbm_names(self._booster)
            self._explain = lightgbm_explain
        else:
            from serving.runtimes.nosklearn import hidden_sklearn

            with hidden_sklearn():  # an ONNX version would otherwise pay 140 MB for scikit-learn
                import xgboost as xgb

            self._booster = xgb.Booster(model_file=str(path))
            self._booster.set_param({"nthread": 1})
            self.feature_names = xgboost_names(self._booster)
            self._explain = xgboost_explain

    @staticmethod
    def find(version_dir: Path) -> Path | None:
        for name in SOURCE_BOOSTER_FILES:
            if (version_dir / name).is_file():
                return version_dir / name
        return None

    def __call__(self, x: Array) -> Explanation:
        with self._lock:
            return self._explain(self._booster, x)

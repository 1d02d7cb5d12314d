"""The Runtime protocol every framework implements, and the factory that loads one through the
runtime registry (serving/platforms.py)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from serving import platforms
from serving.errors import ModelLoadError
from serving.inference import Array
from serving.modelconfig import ModelConfig
from serving.settings import Settings


class Runtime(Protocol):
    """A loaded model version. ``predict`` is blocking and thread-safe; callers run it off
    the event loop. Inputs are already validated against the config (names, dtypes,
    shapes, one shared batch dimension); outputs are keyed by the config's output names."""

    def predict(self, inputs: dict[str, Array]) -> dict[str, Array]: ...

    def close(self) -> None: ...


def model_file(config: ModelConfig, version_dir: Path) -> Path:
    names = platforms.get(config.platform).model_files
    for name in names:
        candidate = version_dir / name
        if candidate.is_file():
            return candidate
    missing = f"no {' or '.join(names)} for platform '{config.platform}'"
    raise ModelLoadError(f"{version_dir}: {missing}", missing, version_dir)


def signature_mismatch(path: Path, mismatch: str) -> ModelLoadError:
    """The error for a model file whose signature is not the one config.yaml declares: the
    whole text for the log, ``signature mismatch: ...`` as the public reason."""
    return ModelLoadError(f"{path}: {mismatch}", f"signature mismatch: {mismatch}", path)


def check_feature_count(path: Path, n_features: int, config: ModelConfig) -> None:
    """A booster's feature count against config.yaml's ``[-1, F]`` input."""
    declared = config.inputs[0].shape[1]
    if n_features != declared:
        raise signature_mismatch(
            path, f"the booster takes {n_features} features but config.yaml declares {declared}"
        )


class RuntimeClass(Protocol):
    """What a registry entry's ``loader`` names: a class built from the model file, the config
    and the settings, whose instances are Runtimes."""

    def __call__(self, path: Path, config: ModelConfig, settings: Settings) -> Runtime: ...


def runtime_class(platform: platforms.Platform) -> RuntimeClass:
    """Import the entry's loader (only now: a server without boosters never imports XGBoost)."""
    module_name, _, class_name = platform.loader.partition(":")
    cls: RuntimeClass = getattr(importlib.import_module(module_name), class_name)
    return cls


def load_runtime(config: ModelConfig, version_dir: Path, settings: Settings) -> Runtime:
    """Load the version's model file; raises ModelLoadError with the reason on any fault."""
    path = model_file(config, version_dir)
    return runtime_class(platforms.get(config.platform))(path, config, settings)


SOURCE_BOOSTER_FILES = ("booster.json", "booster.ubj", "booster.txt")
"""The native booster ``serving export`` keeps beside an ONNX version it made, so the version
can explain its predictions (serving/runtimes/explain.py)."""


@dataclass(frozen=True)
class Explanation:
    """Exact per-feature contributions of a tree ensemble, in its raw margin (log-odds for
    binary classifiers, per-class margins for multiclass): ``contributions.sum(-1) + bias ==
    margin`` up to float rounding. Shapes: [N, F], [N], [N] or, with K classes, [N, K, F],
    [N, K], [N, K]."""

    contributions: Array
    bias: Array
    margin: Array


class Explainer(Protocol):
    """The optional capability of a runtime that can explain (``Runtime.explain``)."""

    def __call__(self, x: Array) -> Explanation: ...


def explainer(runtime: Runtime) -> Explainer | None:
    """The runtime's ``explain`` method, or None when it cannot explain."""
    found = getattr(runtime, "explain", None)
    return found if callable(found) else None


def feature_names(runtime: Runtime) -> list[str] | None:
    """The booster's own feature names, when the runtime knows them."""
    names = getattr(runtime, "feature_names", None)
    return list(names) if isinstance(names, list | tuple) else None

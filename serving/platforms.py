"""The runtime registry: every platform a ``config.yaml`` may name, in one place.

Each entry says which files hold the model, how the platform is spelled on the wire (OIP
metadata, Triton's model configuration, KServe's ``modelFormat``), which class loads it and
what it can do. Everything else asks the registry: the config schema validates ``platform``
against it, the runtime factory imports ``loader`` only when a model of that platform loads
(so a server with ONNX models never imports XGBoost), the metadata and Triton adapters read
their names from it, and tests check the manifests and the chart schema against it. An
unknown platform is an error, never a fallback.

Adding a runtime: one module with a class ``Cls(path, config, settings)`` that implements
``serving.runtimes.base.Runtime``, one ``Platform`` entry here (or ``register`` from a plugin
or a test), and the formats in manifests/ and the chart (docs/design/add-a-runtime.md).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Platform:
    name: str
    """The ``platform`` of ``config.yaml``."""
    model_files: tuple[str, ...]
    """File names of the model in a version folder, tried in order."""
    oip_platform: str
    """The ``platform`` of OIP model metadata (Triton's names where they exist)."""
    triton_backend: str
    """The ``backend`` of Triton's model configuration."""
    loader: str
    """``module:Class`` of the runtime, imported when a model of this platform loads."""
    kserve_format: str
    """KServe's ``modelFormat.name`` (the ServingRuntime's ``supportedModelFormats``)."""
    kserve_format_version: str
    """The format version the ServingRuntime advertises."""
    single_tensor: bool = False
    """One input of shape ``[-1, n_features]`` and one output (boosters)."""
    tensor_datatypes: tuple[str, ...] | None = None
    """The only datatypes its tensors may have; None = any the model file declares."""
    raw_score: bool = False
    """``config.yaml`` may ask for raw scores (before the objective's link function)."""
    fast_path: bool = False
    """Has a verified fast path that ``fast_path: false`` turns off."""
    explain: bool = False
    """Can return exact per-feature contributions (``Runtime.explain``; an ONNX version that
    ``serving export`` made keeps its source booster and explains through it)."""
    exports_to_onnx: bool = False
    """``serving export`` converts it to ONNX."""
    threads_inside: bool = False
    """Its predict spreads one call over its own threads: batch scoring hands it whole chunks
    (``parallel: runtime``) instead of running chunks side by side."""
    nan_as_missing: bool = False
    """NaN is its native 'missing' marker, so batch scoring keeps NaN rows by default."""


ONNX = Platform(
    name="onnx",
    model_files=("model.onnx",),
    oip_platform="onnxruntime_onnx",
    triton_backend="onnxruntime",
    loader="serving.runtimes.onnx:OnnxRuntime",
    kserve_format="onnx",
    kserve_format_version="1",
)
XGBOOST = Platform(
    name="xgboost",
    model_files=("model.ubj", "model.json"),
    oip_platform="xgboost",
    triton_backend="xgboost",
    loader="serving.runtimes.xgboost:XGBoostRuntime",
    kserve_format="xgboost",
    kserve_format_version="2",
    single_tensor=True,
    fast_path=True,
    exports_to_onnx=True,
    threads_inside=True,
    nan_as_missing=True,
    explain=True,
)
LIGHTGBM = Platform(
    name="lightgbm",
    # LightGBM's text format (Booster.save_model); model.bst is KServe lgbserver's name for it
    model_files=("model.txt", "model.bst"),
    oip_platform="lightgbm",
    triton_backend="lightgbm",
    loader="serving.runtimes.lightgbm:LightGBMRuntime",
    kserve_format="lightgbm",
    kserve_format_version="4",
    single_tensor=True,
    tensor_datatypes=("FP32", "FP64"),
    raw_score=True,
    fast_path=True,
    exports_to_onnx=True,
    explain=True,
)

_REGISTRY: dict[str, Platform] = {p.name: p for p in (ONNX, XGBOOST, LIGHTGBM)}


class UnknownPlatform(ValueError):
    """A platform name no entry has (its text lists the known ones)."""


def get(name: str) -> Platform:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = [f"'{n}'" for n in _REGISTRY]
        expected = known[0] if len(known) == 1 else f"{', '.join(known[:-1])} or {known[-1]}"
        raise UnknownPlatform(f"unknown platform '{name}'; expected {expected}") from None


def names() -> list[str]:
    return sorted(_REGISTRY)


def all_platforms() -> list[Platform]:
    return [_REGISTRY[name] for name in names()]


def register(platform: Platform) -> None:
    """Add a platform (a plugin, or a test's toy runtime). A name is registered once."""
    if platform.name in _REGISTRY:
        raise ValueError(f"platform '{platform.name}' is registered already")
    if ":" not in platform.loader:
        raise ValueError(f"loader '{platform.loader}' is not 'module:Class'")
    _REGISTRY[platform.name] = platform


def unregister(name: str) -> None:
    """Remove a platform added with ``register`` (tests clean up with it)."""
    if name in (ONNX.name, XGBOOST.name, LIGHTGBM.name):
        raise ValueError(f"platform '{name}' is built in")
    _REGISTRY.pop(name, None)

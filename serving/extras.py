"""Optional features and the extra that installs each, so a command whose extra is missing says
what to install in one line instead of failing with a traceback on its first import.

The runtime install (the image, the README's first command) has neither: `serving serve` needs
none of them.
"""

from __future__ import annotations

from importlib.util import find_spec

EXTRAS: dict[str, tuple[str, ...]] = {
    # serving export / demo-models: booster -> ONNX converters and the demo models' training
    "export": ("onnxmltools", "skl2onnx", "sklearn"),
    # serving rollout on InferenceServices: the Kubernetes API client
    "rollout": ("kubernetes",),
}


def missing_extra(extra: str, command: str) -> str | None:
    """None when every module of ``extra`` is importable, else the one line to show."""
    absent = [module for module in EXTRAS[extra] if find_spec(module) is None]
    if not absent:
        return None
    return (
        f"{command} needs the '{extra}' extra ({', '.join(absent)} not installed): "
        f"pip install 'serving[{extra}]' (in a checkout: bash scripts/install.sh test)"
    )

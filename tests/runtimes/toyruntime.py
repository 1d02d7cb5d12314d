"""A toy runtime, as a reviewer adding a platform would write one: the whole of it is this
module and one registry entry (tests/runtimes/test_contract.py registers it).

``model.toy`` holds one number per output column as text; predict answers each row's sum times
those numbers. Small, but it goes through the real loader, the config checks, warm-up, the
repository and the dataplane like any runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from serving.errors import ModelLoadError
from serving.inference import Array
from serving.modelconfig import ModelConfig
from serving.runtimes.base import signature_mismatch
from serving.settings import Settings


class ToyRuntime:
    def __init__(self, path: Path, config: ModelConfig, settings: Settings) -> None:
        try:
            self.weights = np.array([float(w) for w in path.read_text().split()], dtype=np.float32)
        except ValueError as exc:
            raise ModelLoadError(f"{path}: {exc}", "model.toy is not a list of numbers", path) from None
        self.input = config.inputs[0].name
        self.output = config.outputs[0].name
        declared = config.outputs[0].shape[1]
        if declared != len(self.weights):
            raise signature_mismatch(
                path, f"model.toy has {len(self.weights)} weights, config.yaml declares {declared}"
            )

    def predict(self, inputs: dict[str, Array]) -> dict[str, Array]:
        rows = inputs[self.input].astype(np.float32).sum(axis=1, keepdims=True)
        return {self.output: rows * self.weights}

    def close(self) -> None:
        pass

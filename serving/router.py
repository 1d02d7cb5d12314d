"""Picks the model version that serves a request.

An explicit version always wins. Otherwise the model's traffic policy decides; with no
weights configured, the latest READY version serves. Pure code: no I/O, no server.
"""

from __future__ import annotations

from serving.errors import ModelNotFound, ModelNotReady
from serving.repository import Model, ModelVersion


class Router:
    def route(self, model: Model, version: str | None, routing_key: str | None = None) -> ModelVersion:
        if version is not None:
            entry = model.versions.get(version)
            if entry is None:
                raise ModelNotFound(f"model '{model.name}' has no version '{version[:64]}'")
            if not entry.ready:
                raise ModelNotReady(
                    f"model '{model.name}' version {version} is {entry.state.value}"
                    + (f": {entry.reason}" if entry.reason else "")
                )
            return entry
        ready = model.ready_versions()
        if not ready:
            reason = model.error or "; ".join(
                f"version {v.version} {v.state.value}: {v.reason}" for v in model.versions.values()
            )
            raise ModelNotReady(
                f"model '{model.name}' has no ready version" + (f" ({reason})" if reason else "")
            )
        return ready[-1]

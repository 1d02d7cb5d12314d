"""Fault injection for rollout drills: errors and added latency on one model version.

Off unless ``Settings.fault_target`` names ``model:version``. Used to show that a canary
analysis catches a bad version (tests/rollout) and to rehearse rollbacks in staging; never
set it in production.
"""

from __future__ import annotations

import asyncio
import random

from serving.errors import RuntimeFault
from serving.settings import Settings


class FaultInjector:
    def __init__(
        self, model: str, version: str, error_rate: float, latency_s: float, rng: random.Random | None = None
    ) -> None:
        self.model = model
        self.version = version
        self.error_rate = error_rate
        self.latency_s = latency_s
        self._rng = rng or random.Random()

    @classmethod
    def from_settings(cls, settings: Settings) -> FaultInjector | None:
        if not settings.fault_target:
            return None
        model, _, version = settings.fault_target.rpartition(":")
        return cls(model, version, settings.fault_error_rate, settings.fault_latency_ms / 1000)

    async def apply(self, model: str, version: str) -> None:
        """Sleep and/or fail when (model, version) is the target; a no-op otherwise."""
        if model != self.model or version != self.version:
            return
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        if self.error_rate > 0 and self._rng.random() < self.error_rate:
            raise RuntimeFault(f"injected fault on model '{model}' version {version} (fault_target)")

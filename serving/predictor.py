"""The predict stage between router and runtime.

``Predictor`` is what the dataplane awaits. ``ThreadedPredictor`` runs a runtime's blocking
``predict`` on the shared bounded thread pool, so the event loop never blocks on a model;
the dynamic batcher (``serving.batching``) is another Predictor that wraps the same runtime.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Protocol

from serving.runtimes.base import Runtime
from serving.types import Array


class Predictor(Protocol):
    async def predict(self, inputs: dict[str, Array], deadline: float | None) -> dict[str, Array]: ...

    async def close(self) -> None: ...


class ThreadedPredictor:
    def __init__(self, runtime: Runtime, executor: Executor) -> None:
        self._runtime = runtime
        self._executor = executor

    async def predict(self, inputs: dict[str, Array], deadline: float | None) -> dict[str, Array]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._runtime.predict, inputs)

    async def close(self) -> None:
        return None

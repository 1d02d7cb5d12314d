"""Fault injection (rollout drills): off by default, scoped to one model version."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from pydantic import ValidationError

from serving.core.faults import FaultInjector
from serving.errors import RuntimeFault
from serving.settings import Settings


def test_off_by_default() -> None:
    assert FaultInjector.from_settings(Settings()) is None


def test_target_must_be_model_colon_version() -> None:
    with pytest.raises(ValidationError):
        Settings(fault_target="iris")
    with pytest.raises(ValidationError):
        Settings(fault_target="iris:0")
    injector = FaultInjector.from_settings(Settings(fault_target="iris.v2-a:12", fault_error_rate=0.5))
    assert injector is not None and (injector.model, injector.version) == ("iris.v2-a", "12")


def test_error_rate_and_latency_hit_only_the_target() -> None:
    injector = FaultInjector("iris", "2", error_rate=0.3, latency_s=0.0, rng=random.Random(7))

    async def run(version: str, n: int) -> int:
        failures = 0
        for _ in range(n):
            try:
                await injector.apply("iris", version)
            except RuntimeFault as exc:
                assert exc.http_status == 500
                failures += 1
        return failures

    assert asyncio.run(run("1", 500)) == 0
    assert 100 < asyncio.run(run("2", 500)) < 200  # 30 % of 500, seeded

    slow = FaultInjector("iris", "2", error_rate=0.0, latency_s=0.05)
    start = time.perf_counter()
    asyncio.run(slow.apply("iris", "2"))
    assert time.perf_counter() - start >= 0.05
    start = time.perf_counter()
    asyncio.run(slow.apply("other", "2"))
    assert time.perf_counter() - start < 0.05

"""The event loop's lag histogram (serving/observability/looplag.py): a loop blocked for a
while shows up as one late sample; an idle loop samples near zero."""

from __future__ import annotations

import asyncio
import time

from serving.observability.looplag import sample_loop_lag
from serving.observability.metrics import Metrics
from tests.waiting import wait_until_async


def _samples(metrics: Metrics) -> tuple[float, float, float]:
    """(count, sum, count above 0.1 s) of serving_event_loop_lag_seconds."""
    count = total = le_100ms = 0.0
    for metric in metrics.event_loop_lag.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count"):
                count = sample.value
            elif sample.name.endswith("_sum"):
                total = sample.value
            elif sample.name.endswith("_bucket") and sample.labels["le"] == "0.1":
                le_100ms = sample.value
    return count, total, count - le_100ms


def test_a_blocked_loop_is_one_late_sample() -> None:
    metrics = Metrics()

    async def run() -> None:
        task = asyncio.get_running_loop().create_task(sample_loop_lag(metrics.event_loop_lag, 0.02))
        await wait_until_async(lambda: _samples(metrics)[0] >= 2, 10, message="no idle samples")
        time.sleep(0.25)  # deliberate: a callback that holds the loop
        await wait_until_async(
            lambda: _samples(metrics)[2] >= 1 and _samples(metrics)[0] >= 4, 10, message="no late sample"
        )
        task.cancel()

    asyncio.run(run())
    count, total, late = _samples(metrics)
    assert count >= 4
    assert late >= 1  # the sample that waited behind the blocking call
    assert 0.2 <= total < 0.25 + 0.05 * count

"""The event loop's lag, sampled for ``serving_event_loop_lag_seconds``.

Every request of a process shares one event loop: a callback that runs long (a big decode, a
full garbage collection, a predict run inline that should not have been), or a CPU taken by
other processes, delays every connection at once and shows in the tail latency, not in any
request's own stages. A timer due every ``interval`` seconds records how late the loop ran it;
the histogram is what an SRE reads to tell such stalls from slow models.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any


async def sample_loop_lag(histogram: Any, interval: float) -> None:
    """Observe the loop's lag into ``histogram`` every ``interval`` seconds, until cancelled."""
    while True:
        due = time.monotonic() + interval
        await asyncio.sleep(interval)
        histogram.observe(max(0.0, time.monotonic() - due))

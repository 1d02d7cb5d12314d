"""Waiting for something to happen: poll a condition until a deadline, never a fixed sleep.

A fixed ``time.sleep`` either wastes time (the thing happened long ago) or fails on a loaded
machine (it has not happened yet). ``wait_until`` returns as soon as the condition holds and
fails with a message that says what never happened. tests/test_no_fixed_sleeps.py holds the
rule: every other sleep in tests/ is inside a loop with a deadline or is marked ``# deliberate:``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

Message = str | Callable[[], str]


def _text(message: Message) -> str:
    return message() if callable(message) else message


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    interval: float = 0.05,
    message: Message = "the condition never held",
) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns something truthy, and return
    that; raise AssertionError with ``message`` (a string, or a callable for text that is costly
    or only meaningful at the time, such as a log tail) after ``timeout`` seconds. The predicate
    runs at least once, and once more at the deadline, so a slow first call still counts."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"{_text(message)} (waited {timeout:g}s)")
        time.sleep(interval)


async def wait_until_async(
    predicate: Callable[[], T | None],
    timeout: float,
    interval: float = 0.005,
    message: Message = "the condition never held",
) -> T:
    """``wait_until`` for a coroutine: checks ``predicate`` between turns of the running event
    loop, so the tasks being waited for can progress."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if loop.time() >= deadline:
            raise AssertionError(f"{_text(message)} (waited {timeout:g}s)")
        await asyncio.sleep(interval)

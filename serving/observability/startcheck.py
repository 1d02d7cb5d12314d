"""A fast path's start-up verdict, computed once per process and kept.

The metrics fast paths (serving/observability/exposition.py, lean.py) compare themselves with
prometheus-client's own output on a probe registry before they serve; that costs a few
milliseconds, so every Metrics of the process shares the first verdict, and its warning is
logged once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class StartupCheck:
    """Call it for the verdict: None when the fast path passed, else why not."""

    def __init__(self, check: Callable[[], str | None], warn: Callable[[str], None]) -> None:
        self._check = check
        self._warn = warn  # called with a failed verdict, once
        self._lock = threading.Lock()
        self._verdicts: list[str | None] = []  # empty until the first call (tests empty it again)

    def __call__(self) -> str | None:
        with self._lock:
            if not self._verdicts:
                verdict = self._check()
                self._verdicts.append(verdict)
                if verdict is not None:
                    self._warn(verdict)
            return self._verdicts[0]

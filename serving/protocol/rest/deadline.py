"""The REST request deadline: ``x-request-timeout-ms`` (gRPC callers use gRPC's own deadline)."""

from __future__ import annotations

import time

from serving.errors import InvalidInput

TIMEOUT_HEADER = b"x-request-timeout-ms"
"""REST request header: the caller's deadline in milliseconds from arrival."""

MAX_TIMEOUT_MS = 24 * 3600 * 1000


def deadline_from_header(value: bytes, now: float | None = None) -> float:
    """``x-request-timeout-ms: 250`` -> absolute ``time.monotonic()`` deadline."""
    text = value.strip()
    if not text.isdigit() or len(text) > 9 or not 0 < int(text) <= MAX_TIMEOUT_MS:
        raise InvalidInput(
            f"x-request-timeout-ms must be a whole number of milliseconds between 1 and {MAX_TIMEOUT_MS}"
        )
    return (time.monotonic() if now is None else now) + int(text) / 1000

"""Request limits the dataplane enforces for every protocol: in-flight bound and deadlines.

Body size, tensor element count and nesting depth are checked by the codecs (they see the
bytes); slow-client read timeouts live in the REST connection protocol
(``serving.protocol.rest.timeouts``). This module holds what is protocol-agnostic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from serving.errors import InvalidInput
from serving.settings import Settings

TIMEOUT_HEADER = b"x-request-timeout-ms"
"""REST request header: the caller's deadline in milliseconds from arrival (gRPC uses its
own deadline, ``grpc-timeout``)."""

MAX_TIMEOUT_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class RequestLimits:
    max_inflight: int = 0
    """Requests per model version inside the predict stage (waiting for a thread or
    computing) on the unbatched path; 0 = unbounded. Batched versions are bounded by their
    batcher's ``max_queue_size`` instead."""
    default_timeout: float | None = None
    """Seconds a request may take when its caller set no deadline (None = no deadline)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> RequestLimits:
        timeout = settings.request_timeout_ms / 1000 if settings.request_timeout_ms else None
        return cls(max_inflight=settings.max_inflight, default_timeout=timeout)


def deadline_from_header(value: bytes, now: float | None = None) -> float:
    """``x-request-timeout-ms: 250`` -> absolute ``time.monotonic()`` deadline."""
    text = value.strip()
    if not text.isdigit() or len(text) > 9 or not 0 < int(text) <= MAX_TIMEOUT_MS:
        raise InvalidInput(
            f"x-request-timeout-ms must be a whole number of milliseconds between 1 and {MAX_TIMEOUT_MS}"
        )
    return (time.monotonic() if now is None else now) + int(text) / 1000

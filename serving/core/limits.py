"""Request limits the dataplane enforces for every protocol: in-flight bound and deadlines.

Body size, tensor element count and nesting depth are checked by the codecs (they see the
bytes); slow-client read timeouts live in the REST connection protocol
(``serving.protocol.rest.timeouts``); each adapter turns its protocol's deadline (REST's
``x-request-timeout-ms`` header, gRPC's own) into ``InferenceRequest.deadline``. This module
holds what is protocol-agnostic.
"""

from __future__ import annotations

from dataclasses import dataclass

from serving.settings import Settings


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

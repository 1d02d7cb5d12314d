"""Structured access logs: one JSON line per inference request, off by default or sampled.

Each line goes to the server's stdout in one ``write`` call, so lines from several worker
processes sharing stdout never interleave (a pipe write under 4 KiB is atomic). Fields::

    {"ts": "2026-11-23T20:00:00.123456+00:00", "log": "access", "request_id": "r1",
     "model": "iris-xgb", "version": "2", "variant": "stable", "protocol": "rest",
     "status": 200, "outcome": "2xx", "duration_ms": 0.412, "pid": 1234}

``status`` is the HTTP status the error table gives (also for gRPC requests, whose code is
in ``outcome``, as in the metrics); failed requests add ``"error": "<message>"``. The
``request_id`` is the client's ``id`` when it sent one, else a fresh one for the line.
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import orjson

from serving.errors import ServingError
from serving.settings import Settings


class AccessLog:
    """Writes a sampled share of requests as JSON lines to a file descriptor (stdout)."""

    def __init__(self, sample_rate: float, fd: int = 1, rand: Callable[[], float] = random.random) -> None:
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError("access log sample rate must be within [0, 1]")
        self.sample_rate = sample_rate
        self._fd = fd
        self._rand = rand
        self._pid = os.getpid()

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessLog | None:
        """None when access logs are off, so the hot path pays one ``is None`` test."""
        rate = settings.access_log_sample_rate
        return cls(rate) if rate > 0.0 else None

    def record(
        self,
        request_id: str | None,
        model: str,
        version: str,
        variant: str,
        protocol: str,
        outcome: str,
        seconds: float,
        error: ServingError | None = None,
    ) -> bool:
        """Log one finished request if it is sampled; returns whether it was."""
        if self.sample_rate < 1.0 and self._rand() >= self.sample_rate:
            return False
        line: dict[str, object] = {
            "ts": datetime.now(UTC).isoformat(),
            "log": "access",
            "request_id": request_id if request_id else uuid.uuid4().hex,
            "model": model,
            "version": version,
            "variant": variant,
            "protocol": protocol,
            "status": 200 if error is None else error.http_status,
            "outcome": outcome,
            "duration_ms": round(seconds * 1e3, 3),
            "pid": self._pid,
        }
        if error is not None:
            line["error"] = error.message[:512]
        os.write(self._fd, orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))
        return True

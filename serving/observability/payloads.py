"""Sampled payload logging: inputs and outputs as CloudEvents (docs/observability.md).

The adapters hand every successful inference request to ``PayloadLogger.offer`` at the
edge. ``offer`` decides whether the request is sampled (the model's ``payload_logging``
in config.yaml, else the server's ``SERVING_PAYLOAD_LOG_*`` settings; by request, or by its
sticky routing key so one caller's requests are all logged or none), and appends a
reference to the request and response to a bounded queue: no encoding, no I/O, no lock
held by I/O. A full queue drops the event and counts it
(``serving_payload_events_dropped_total{reason="queue_full"}``): logging never blocks or
fails a request.

One background thread per process takes events off the queue in batches, encodes them
(v2 JSON, orjson over numpy) and writes them to each configured sink:

- **HTTP** (``SERVING_PAYLOAD_LOG_URL``): one POST per event in CloudEvents' binary content
  mode, over a kept-alive connection, as KServe's InferenceService logger sends them: type
  ``org.kubeflow.serving.inference.request`` (the inputs) and ``...response`` (the outputs),
  both with the request's id as ``ce-id`` and KServe's extensions ``inferenceservicename``,
  ``namespace``, ``component``, ``endpoint``, plus ``modelname``, ``modelversion``,
  ``variant``, ``protocol`` and, on the response, ``latencyus``. A failed delivery (no
  connection, timeout, 5xx, 429) is retried with exponential back-off; each failed
  attempt counts in ``serving_payload_sink_errors_total`` and is logged at most once per
  ``_LOG_EVERY`` seconds; an event still undelivered is dropped (``reason="sink_failed"``).
- **Files** (``SERVING_PAYLOAD_LOG_DIR``): JSON lines, one CloudEvent per line in structured
  mode, ``payloads-<pid>.jsonl`` per process, rotated past ``payload_log_max_file_mb`` into
  ``payloads-<pid>-<UTC time>.jsonl``; the newest ``payload_log_max_files`` rotated files
  are kept.

A model's ``log_inputs: false`` sends no request event (the inputs never leave the
process); ``log_outputs: false`` sends the response event without outputs.
"""

from __future__ import annotations

import http.client
import logging
import os
import random
import socket
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import numpy as np
import orjson

from serving.inference import InferenceRequest, InferenceResponse, Tensor
from serving.modelconfig import PayloadLoggingConfig
from serving.observability.metrics import Metrics
from serving.settings import Settings


class HasConfig(Protocol):
    """What the logger reads of a served model (the repository's ``Model``): its config, for
    the per-model sampling policy. A protocol, so observability does not import the model store."""

    @property
    def config(self) -> Any: ...


log = logging.getLogger("serving.payloads")

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
_LOG_EVERY = 10.0
"""Seconds between two log lines about one sink's failures (the metrics count every one)."""
_RETRYABLE = {408, 425, 429, 500, 502, 503, 504}
_NO_POLICY = PayloadLoggingConfig()


@dataclass(slots=True)
class _Record:
    request: InferenceRequest
    response: InferenceResponse
    seconds: float
    finished: float
    protocol: str
    log_inputs: bool
    log_outputs: bool


@dataclass(slots=True)
class Event:
    """One CloudEvent: its attributes (``ce-`` headers without the prefix) and JSON data."""

    attributes: dict[str, str]
    data: bytes
    model: str

    def binary_headers(self) -> dict[str, str]:
        """Binary content mode: every attribute as a ``ce-`` header, the data as the body."""
        headers = {f"ce-{k}": v for k, v in self.attributes.items()}
        headers["content-type"] = "application/json"
        return headers

    def structured_line(self) -> bytes:
        """Structured mode, one JSON line (the local files)."""
        head = orjson.dumps({**self.attributes, "datacontenttype": "application/json"})
        return head[:-1] + b',"data":' + self.data + b"}\n"


class _Throttled:
    """Logs a sink's failures at most once per ``_LOG_EVERY`` seconds, with a count."""

    def __init__(self, sink: str) -> None:
        self._sink = sink
        self._last = -_LOG_EVERY
        self._suppressed = 0

    def warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last < _LOG_EVERY:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more since the last report)" if self._suppressed else ""
        log.warning("payload sink %s: %s%s", self._sink, message, more)
        self._last, self._suppressed = now, 0


class HttpSink:
    """POSTs events in binary content mode to one URL, retrying with back-off."""

    name = "http"

    def __init__(self, url: str, timeout: float, retries: int, backoff: float, metrics: Metrics) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"payload log URL '{url}' is not an http(s) URL")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._timeout = timeout
        self._retries = retries
        self._backoff = backoff
        self._conn: http.client.HTTPConnection | None = None
        self._errors = metrics.payload_sink_errors.labels(self.name)
        self._sent = metrics.payload_events_sent.labels(self.name)
        self._dropped = metrics.payload_events_dropped
        self._log = _Throttled(f"{parts.scheme}://{self._host}:{self._port}")
        self.stopping = threading.Event()

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self._timeout)
        return self._conn

    def _post(self, event: Event) -> int:
        conn = self._connection()
        try:
            conn.request("POST", self._path, event.data, event.binary_headers())
            response = conn.getresponse()
            response.read()
            if response.will_close:
                self._close()
            return response.status
        except BaseException:
            self._close()
            raise

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def send(self, events: list[Event]) -> None:
        for event in events:
            self._deliver(event)

    def _deliver(self, event: Event) -> None:
        delay = self._backoff
        for attempt in range(self._retries + 1):
            try:
                status = self._post(event)
            except (OSError, http.client.HTTPException) as exc:
                problem, retry = f"{type(exc).__name__}: {exc}", True
            else:
                if 200 <= status < 300:
                    self._sent.inc()
                    return
                problem, retry = f"HTTP {status}", status in _RETRYABLE
            self._errors.inc()
            self._log.warn(f"{problem} (attempt {attempt + 1} of {self._retries + 1})")
            if not retry or attempt == self._retries or self.stopping.wait(delay):
                break
            delay = min(delay * 2, 5.0)
        self._dropped.labels(event.model, "sink_failed").inc()

    def close(self) -> None:
        self._close()


class FileSink:
    """Appends structured-mode events as JSON lines to a rotating file per process."""

    name = "file"

    def __init__(self, directory: Path, max_bytes: int, keep: int, metrics: Metrics) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._dir = directory
        self._max = max_bytes
        self._keep = keep
        self._pid = os.getpid()
        self.path = directory / f"payloads-{self._pid}.jsonl"
        self._file = self.path.open("ab")
        self._errors = metrics.payload_sink_errors.labels(self.name)
        self._sent = metrics.payload_events_sent.labels(self.name)
        self._dropped = metrics.payload_events_dropped
        self._log = _Throttled(str(directory))

    def send(self, events: list[Event]) -> None:
        try:
            self._file.write(b"".join(e.structured_line() for e in events))
            self._file.flush()
            self._sent.inc(len(events))
            if self._file.tell() >= self._max:
                self._rotate()
        except OSError as exc:
            self._errors.inc()
            self._log.warn(f"{type(exc).__name__}: {exc}")
            for event in events:
                self._dropped.labels(event.model, "sink_failed").inc()

    def _rotate(self) -> None:
        self._file.close()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        self.path.rename(self._dir / f"payloads-{self._pid}-{stamp}.jsonl")
        self._file = self.path.open("ab")
        rotated = sorted(self._dir.glob(f"payloads-{self._pid}-*.jsonl"))
        for old in rotated[: max(len(rotated) - self._keep, 0)]:
            old.unlink(missing_ok=True)

    def close(self) -> None:
        self._file.close()


Sink = HttpSink | FileSink


class PayloadLogger:
    """Samples requests at the edge and ships them to the sinks off the request path."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        models: Mapping[str, HasConfig],
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.sample_rate = settings.payload_log_sample_rate
        self.by = settings.payload_log_by
        self._models = models
        self._rand = rand
        self._max_queue = settings.payload_log_queue_size
        self._batch = settings.payload_log_batch_size
        self._queue: deque[_Record] = deque()
        self._wake = threading.Event()
        self._stop = False
        self._dropped = metrics.payload_events_dropped
        self._source = settings.payload_log_source or f"/serving/{socket.gethostname()}"
        self._static = {
            "inferenceservicename": settings.payload_log_inference_service,
            "namespace": settings.payload_log_namespace,
            "component": settings.payload_log_component,
        }
        self.sinks: list[Sink] = []
        if settings.payload_log_url:
            self.sinks.append(
                HttpSink(
                    settings.payload_log_url,
                    settings.payload_log_timeout_seconds,
                    settings.payload_log_retries,
                    settings.payload_log_backoff_seconds,
                    metrics,
                )
            )
        if settings.payload_log_dir is not None:
            self.sinks.append(
                FileSink(
                    settings.payload_log_dir,
                    int(settings.payload_log_max_file_mb * 1024 * 1024),
                    settings.payload_log_max_files,
                    metrics,
                )
            )
        if not self.sinks:
            raise ValueError("payload logging needs SERVING_PAYLOAD_LOG_URL or SERVING_PAYLOAD_LOG_DIR")
        self._thread = threading.Thread(target=self._run, name="payload-log", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(
        cls, settings: Settings, metrics: Metrics, models: Mapping[str, HasConfig]
    ) -> PayloadLogger | None:
        """None when no sink is configured (the edge then pays one ``is None`` test)."""
        if not settings.payload_log_url and settings.payload_log_dir is None:
            if settings.payload_log_sample_rate > 0:
                raise ValueError(
                    "SERVING_PAYLOAD_LOG_SAMPLE_RATE is set but no sink is: set SERVING_PAYLOAD_LOG_URL "
                    "and/or SERVING_PAYLOAD_LOG_DIR"
                )
            return None
        return cls(settings, metrics, models)

    # -- the request path: sample and enqueue, nothing else ------------------------------
    def _policy(self, model: str) -> PayloadLoggingConfig:
        entry = self._models.get(model)
        config = entry.config if entry is not None else None
        return config.payload_logging if config is not None else _NO_POLICY

    def sampled(self, request: InferenceRequest, policy: PayloadLoggingConfig) -> bool:
        rate = policy.sample_rate if policy.sample_rate is not None else self.sample_rate
        if rate >= 1.0:
            return True
        if rate <= 0.0:
            return False
        key = request.routing_key
        if (policy.by or self.by) == "key" and key is not None:
            # Sticky: the same key is always in or always out (for a given rate).
            return zlib.crc32(key.encode()) / 4294967296.0 < rate
        return self._rand() < rate

    def offer(
        self, request: InferenceRequest, response: InferenceResponse, seconds: float, protocol: str
    ) -> bool:
        """Queue the request's payloads if sampled; never blocks. False when not sampled or
        dropped (counted)."""
        policy = self._policy(response.model)
        if not self.sampled(request, policy):
            return False
        if len(self._queue) >= self._max_queue or self._stop:
            # counted in events, as the sinks count what they send
            self._dropped.labels(response.model, "queue_full").inc(2 if policy.log_inputs else 1)
            return False
        self._queue.append(
            _Record(request, response, seconds, time.time(), protocol, policy.log_inputs, policy.log_outputs)
        )
        if len(self._queue) == 1 or len(self._queue) >= self._batch:
            self._wake.set()
        return True

    # -- the background thread ------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wake.wait(0.2)
            self._wake.clear()
            while self._queue:
                records = [self._queue.popleft() for _ in range(min(self._batch, len(self._queue)))]
                events: list[Event] = []
                for record in records:
                    try:
                        events.extend(self.events(record))
                    except Exception:  # a payload we cannot encode must not stop the thread
                        log.exception("payload of %s could not be encoded", record.response.model)
                        self._dropped.labels(record.response.model, "encode_failed").inc(
                            2 if record.log_inputs else 1
                        )
                for sink in self.sinks:
                    try:
                        sink.send(events)
                    except Exception:
                        log.exception("payload sink %s failed", sink.name)
            if self._stop:
                return

    def events(self, record: _Record) -> list[Event]:
        """The request event (unless ``log_inputs: false``) and the response event."""
        request, response = record.request, record.response
        event_id = request.id or response.id or uuid.uuid4().hex
        started = record.finished - record.seconds
        common = {
            "specversion": "1.0",
            "id": event_id,
            "source": self._source,
            **self._static,
            "endpoint": "default" if response.variant == "stable" else response.variant,
            "modelname": response.model,
            "modelversion": response.version,
            "variant": response.variant,
            "protocol": record.protocol,
        }
        out: list[Event] = []
        if record.log_inputs:
            body: dict[str, Any] = {"id": event_id, "inputs": [_tensor(t) for t in request.inputs]}
            if request.parameters:
                body["parameters"] = request.parameters
            attributes = {**common, "type": REQUEST_TYPE, "time": _rfc3339(started)}
            out.append(Event(attributes, _dumps(body), response.model))
        result: dict[str, Any] = {
            "id": event_id,
            "model_name": response.model,
            "model_version": response.version,
        }
        if record.log_outputs:
            result["outputs"] = [_tensor(t) for t in response.outputs]
        attributes = {
            **common,
            "type": RESPONSE_TYPE,
            "time": _rfc3339(record.finished),
            "latencyus": str(round(record.seconds * 1e6)),
        }
        out.append(Event(attributes, _dumps(result), response.model))
        return out

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until the queue is empty (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        while self._queue and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue

    def close(self, timeout: float = 2.0) -> None:
        """Send what is queued (at most ``timeout`` seconds), then stop the thread (waiting at
        most ``timeout`` more): bounded, so shutdown stays inside the pod's termination grace."""
        self.flush(timeout)
        self._stop = True
        for sink in self.sinks:
            if isinstance(sink, HttpSink):
                sink.stopping.set()
        self._wake.set()
        self._thread.join(timeout)
        for sink in self.sinks:
            sink.close()


def _tensor(tensor: Tensor) -> dict[str, Any]:
    data = tensor.data
    if data.dtype.kind in "OSU":
        flat: Any = [
            v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in data.ravel().tolist()
        ]
    elif data.dtype == np.float16:
        flat = data.astype(np.float32).ravel()
    else:
        flat = np.ascontiguousarray(data).ravel()
    return {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape), "data": flat}


def _dumps(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def _rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")

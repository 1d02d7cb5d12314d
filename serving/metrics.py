"""Every Prometheus collector the server exports, on an injectable registry.

Children are cached per label set so recording on the hot path is a dict lookup and an
add, not a ``labels()`` call that rebuilds the label tuple each time.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# 50 µs to 10 s: online predict lives in the low buckets, overload in the high ones.
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "serving_requests",
            "Inference requests by model, version, variant, protocol and outcome "
            "(REST status class such as 2xx/4xx/5xx, or gRPC code name).",
            ["model", "version", "variant", "protocol", "outcome"],
            registry=r,
        )
        self.request_duration = Histogram(
            "serving_request_duration_seconds",
            "End-to-end inference time inside the server, decode to encode.",
            ["model", "version", "variant", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "serving_queue_wait_seconds",
            "Time a request waited in the batcher queue before compute.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.compute_duration = Histogram(
            "serving_compute_duration_seconds",
            "Runtime predict time per call (one batch).",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "serving_batch_size",
            "Rows per runtime predict call.",
            ["model", "version"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge(
            "serving_inflight_requests",
            "Inference requests inside the server now.",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.queue_depth = Gauge(
            "serving_queue_depth",
            "Requests waiting in the batcher queue now.",
            ["model", "version"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.rejections = Counter(
            "serving_rejections",
            "Requests refused before compute, by reason (overload, deadline, invalid).",
            ["model", "reason"],
            registry=r,
        )
        self.model_load_duration = Gauge(
            "serving_model_load_duration_seconds",
            "How long the version took to load and warm up.",
            ["model", "version"],
            registry=r,
            multiprocess_mode="max",
        )
        self.model_state = Gauge(
            "serving_model_state",
            "1 for the version's current state (READY, LOADING, FAILED, UNAVAILABLE), else 0.",
            ["model", "version", "state"],
            registry=r,
            multiprocess_mode="max",
        )
        self._request_children: dict[tuple[str, ...], tuple[Any, Any]] = {}

    def observe_request(
        self, model: str, version: str, variant: str, protocol: str, outcome: str, seconds: float
    ) -> None:
        key = (model, version, variant, protocol, outcome)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(*key),
                self.request_duration.labels(model, version, variant, protocol),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def set_model_state(self, model: str, version: str, state: str) -> None:
        for known in ("READY", "LOADING", "FAILED", "UNAVAILABLE", "UNLOADING"):
            self.model_state.labels(model, version, known).set(1.0 if known == state else 0.0)

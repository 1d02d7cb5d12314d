"""Every Prometheus collector the server exports, on an injectable registry.

Children are cached per label set so recording on the hot path is a dict lookup and an
add, not a ``labels()`` call that rebuilds the label tuple each time.

With ``--workers N`` the supervisor points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh
directory before it starts the workers; prometheus-client then keeps every value in a
per-process mmap file there, and ``Metrics.exposition`` merges all workers' files at scrape
time, so any worker answers ``/metrics`` with the whole server's counts (no double counting,
no gaps when the kernel spreads scrapes across workers).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest as _generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from serving.labels import NO_VERSION, UNKNOWN_MODEL
from serving.observability.exposition import FAST, Exposition
from serving.observability.lean import lean_problem, wrap
from serving.observability.predictions import OutputRule, PredictionRecorder
from serving.observability.statistics import Statistics, VersionStats
from serving.observability.timeline import Timeline

# 50 µs to 10 s: online predict lives in the low buckets, overload in the high ones.
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
# 0.5 ms to 2.5 s: a healthy loop wakes within a millisecond; stalls show up in the high buckets.
LOOP_LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# Largest absolute difference between a shadow's output and the primary's, per request.
DIFF_BUCKETS = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0)

ALL_VERSIONS = "all"
"""The stage series' version label when they are kept per model (``stage_versions=False``)."""
MODEL_STATES = ("READY", "LOADING", "FAILED", "UNAVAILABLE", "UNLOADING")
MONITORING_STATES = ("on", "invalid", "none")
PREDICT_PATHS = ("onnx-twin", "direct", "lightgbm-single-row", "library")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The classic text format every Prometheus 2.x parses (generate_latest writes it); newer
# prometheus-client versions label it 1.0.0, which older scrapers do not know.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


# Outcome labels of a success (serving.protocol.edge's REST and GRPC edges): those requests
# count as Triton-statistics ``success``, every other outcome as ``fail``.
OK_OUTCOMES = frozenset({"2xx", "OK"})


@dataclass(slots=True)
class StageMetrics:
    """Per-(model, version) children a predictor stage records into (cached by ``stage``).
    Stages call ``waited`` and ``executed``, which feed the Prometheus children and the
    version's statistics (serving.observability.statistics) from one measurement.

    The event loop and predict threads both record here, so the three histograms (lean
    recorders, serving.observability.lean, which take no lock of their own) are written under
    ``lock``; ``queue_depth`` stays the library's child (its own lock)."""

    queue_wait: Any
    compute: Any
    batch_size: Any
    queue_depth: Any
    stats: VersionStats
    lock: threading.Lock = field(default_factory=threading.Lock)
    """Held around the histograms' writes; shared by the versions whose children are shared."""

    def waited(self, seconds: float) -> None:
        """One request's wait before compute."""
        with self.lock:
            self.queue_wait.observe(seconds)
        self.stats.queued(seconds)

    def served(self, wait: float, rows: int, seconds: float) -> None:
        """``waited`` then ``executed`` for one request that ran alone (one statistics lock)."""
        with self.lock:
            self.queue_wait.observe(wait)
            self.compute.observe(seconds)
            self.batch_size.observe(rows)
        self.stats.served(wait, rows, seconds)

    def executed(self, rows: int, seconds: float, requests: int = 1) -> None:
        """One runtime call over ``rows`` rows for ``requests`` requests."""
        with self.lock:
            self.compute.observe(seconds)
            self.batch_size.observe(rows)
        self.stats.executed(rows, seconds, requests)


class Metrics:
    """The server's collectors on one registry (a fresh one unless a test passes its own)."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        multiprocess_dir: str | None = None,
        stage_versions: bool = True,
        exposition: str = FAST,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.stage_versions = stage_versions
        """False: the stage series (queue wait, compute, batch size, queue depth) of all of a
        model's versions share one child under version ``ALL_VERSIONS`` (Settings.stage_metrics)."""
        self.multiprocess_dir = (
            multiprocess_dir if multiprocess_dir is not None else os.environ.get(MULTIPROC_ENV) or None
        )
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
            "End-to-end inference time inside the server, decode to encode (measured by the adapter).",
            ["model", "version", "variant", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # Shadow copies are not requests anyone sent: they have series of their own, so
        # serving_requests_total counts exactly what the adapters received.
        self.shadow_requests = Counter(
            "serving_shadow_requests",
            "Shadow copies run on the shadow version, by outcome (spelled by the adapter that received "
            "the primary request).",
            ["model", "version", "protocol", "outcome"],
            registry=r,
        )
        self.shadow_duration = Histogram(
            "serving_shadow_duration_seconds",
            "Time to run one shadow copy on the shadow version (off the caller's path).",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "serving_queue_wait_seconds",
            "Time a request waited before compute (batcher queue, or a free predict thread).",
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
            "Requests waiting before compute now (batcher queue, or for a predict thread).",
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
            multiprocess_mode="livemax",
        )
        self.model_state = Gauge(
            "serving_model_state",
            "1 for the version's current state (READY, LOADING, FAILED, UNAVAILABLE, UNLOADING), else 0.",
            ["model", "version", "state"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.predict_path = Gauge(
            "serving_predict_path",
            "1 for the computation that serves the version's small and large batches "
            "(onnx-twin, direct, lightgbm-single-row, library: serving/runtimes/fastpath.py).",
            ["model", "version", "batches", "path"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.predictions = Counter(
            "serving_predictions",
            "Predictions by bucket: the predicted class (0..63, else other) of a classifier output, "
            "or the upper edge of the fixed bin a score falls in (+Inf past the last edge); "
            "serving/observability/predictions.py.",
            ["model", "version", "variant", "output", "bucket"],
            registry=r,
        )
        self.feedback_labels = Counter(
            "serving_feedback_labels",
            "Ground-truth labels joined to earlier answers (POST /v2/models/{m}/feedback), by result: "
            "correct / wrong (class outputs, per row), scored (score outputs).",
            ["model", "version", "variant", "result"],
            registry=r,
        )
        self.feedback_abs_error = Histogram(
            "serving_feedback_abs_error",
            "Absolute error of a score output's answer against its ground-truth label, per row.",
            ["model", "version", "variant"],
            buckets=DIFF_BUCKETS,
            registry=r,
        )
        self.feedback_rejected = Counter(
            "serving_feedback_rejected",
            "Ground-truth labels refused, by reason (unknown_id, duplicate, invalid); nothing of the "
            "request is stored.",
            ["model", "reason"],
            registry=r,
        )
        self.feedback_evicted = Counter(
            "serving_feedback_evicted",
            "Remembered answers dropped before any label came, by reason (capacity: the oldest past "
            "SERVING_FEEDBACK_RETENTION; age: older than SERVING_FEEDBACK_MAX_AGE_SECONDS).",
            ["model", "reason"],
            registry=r,
        )
        self.shadow_comparisons = Counter(
            "serving_shadow_comparisons",
            "Shadow requests compared with the primary's answer, by result (match, mismatch, error).",
            ["model", "primary_version", "shadow_version", "result"],
            registry=r,
        )
        self.shadow_abs_diff = Histogram(
            "serving_shadow_abs_diff",
            "Largest absolute difference between the shadow's and the primary's outputs, per request.",
            ["model", "primary_version", "shadow_version"],
            buckets=DIFF_BUCKETS,
            registry=r,
        )
        self.shadow_rows = Counter(
            "serving_shadow_rows",
            "Rows of shadow copies compared by predicted class (classifier outputs: arg-max or "
            "integer label, as serving_predictions_total buckets them), by result (agree, disagree).",
            ["model", "primary_version", "shadow_version", "output", "result"],
            registry=r,
        )
        self.shadow_dropped = Counter(
            "serving_shadow_dropped",
            "Shadow copies not sent because the shadow queue was full.",
            ["model"],
            registry=r,
        )
        self.payload_events_sent = Counter(
            "serving_payload_events_sent",
            "Payload-logging CloudEvents delivered, by sink (http, file).",
            ["sink"],
            registry=r,
        )
        self.payload_events_dropped = Counter(
            "serving_payload_events_dropped",
            "Sampled payload events not delivered, by reason (queue_full: the bounded queue was "
            "full; sink_failed: retries exhausted; encode_failed).",
            ["model", "reason"],
            registry=r,
        )
        self.payload_sink_errors = Counter(
            "serving_payload_sink_errors",
            "Failed deliveries to a payload sink, each attempt counted (retries included).",
            ["sink"],
            registry=r,
        )
        # Per process ("liveall": one series per worker, with a pid label, under --workers N):
        # convergence means every series shows the generation the store holds.
        self.traffic_generation = Gauge(
            "serving_traffic_policy_generation",
            "Generation of the traffic policy this process applies (0: config.yaml's).",
            ["model"],
            registry=r,
            multiprocess_mode="liveall",
        )
        self.traffic_rejected = Gauge(
            "serving_traffic_policy_rejected",
            "1 while this process refuses the traffic policy in the store (the previous one stays).",
            ["model"],
            registry=r,
            multiprocess_mode="liveall",
        )
        # Remote repositories (serving/repository/remote.py): downloads, the shared model cache
        # and the store's health. Counted per process; with --workers N each worker syncs.
        self.repository_download_bytes = Counter(
            "serving_repository_download_bytes",
            "Bytes downloaded from the object store, by model and version (0 on a warm restart).",
            ["model", "version"],
            registry=r,
        )
        self.repository_download_seconds = Counter(
            "serving_repository_download_seconds",
            "Seconds spent downloading from the object store, by model and version.",
            ["model", "version"],
            registry=r,
        )
        self.model_cache_hits = Counter(
            "serving_model_cache_hits",
            "Remote repository files found in the model cache (verified, not downloaded).",
            registry=r,
        )
        self.model_cache_misses = Counter(
            "serving_model_cache_misses",
            "Remote repository files not in the model cache (downloaded, or missing while the store is down).",
            registry=r,
        )
        self.model_cache_bytes = Gauge(
            "serving_model_cache_bytes",
            "Bytes held by the model cache (every process sharing it).",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.model_cache_evictions = Counter(
            "serving_model_cache_evictions",
            "Files evicted from the model cache by its size bound (least recently used, unlinked).",
            registry=r,
        )
        self.repository_last_listing = Gauge(
            "serving_repository_last_listing_timestamp_seconds",
            "Unix time of the last successful listing of the remote repository.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.repository_store_up = Gauge(
            "serving_repository_store_up",
            "1 when the last listing of the remote repository succeeded; 0 while it fails (cached "
            "versions keep serving).",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.repository_failures = Counter(
            "serving_repository_failures",
            "Failed store operations after their retries: list, download, digest (a mismatch).",
            ["kind"],
            registry=r,
        )
        # Model monitoring (serving.observability.monitoring): per-process drift of what this
        # process saw ("liveall": one series per worker), and summable per-bin counters from
        # which the fleet's drift is computed by a recording rule (PSI is not additive).
        self.feature_drift = Gauge(
            "serving_feature_drift",
            "PSI of a feature over this process's monitoring window against the training profile "
            "(NaN until the window holds monitoring_min_rows rows).",
            ["model", "version", "feature"],
            registry=r,
            multiprocess_mode="liveall",
        )
        self.prediction_drift = Gauge(
            "serving_prediction_drift",
            "PSI of an output value over this process's monitoring window against the training profile.",
            ["model", "version", "output"],
            registry=r,
            multiprocess_mode="liveall",
        )
        self.feature_out_of_range = Counter(
            "serving_feature_out_of_range",
            "Sampled feature values outside the training range (below min, above max, +-inf) "
            "or categories the training data never had.",
            ["model", "version", "feature"],
            registry=r,
        )
        self.feature_missing = Counter(
            "serving_feature_missing",
            "Sampled feature values that were missing (NaN).",
            ["model", "version", "feature"],
            registry=r,
        )
        self.feature_bin_rows = Counter(
            "serving_feature_bin_rows",
            "Sampled rows per feature and profile bin (bin number, unseen, missing): summed over "
            "processes by the recording rule that computes the fleet's PSI.",
            ["model", "version", "feature", "bin"],
            registry=r,
        )
        self.prediction_bin_rows = Counter(
            "serving_prediction_bin_rows",
            "Sampled rows per output value and profile bin (as serving_feature_bin_rows).",
            ["model", "version", "output", "bin"],
            registry=r,
        )
        self.feature_reference_share = Gauge(
            "serving_feature_reference_share",
            "Share of the training rows in each profile bin of a feature (the PSI reference).",
            ["model", "version", "feature", "bin"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.prediction_reference_share = Gauge(
            "serving_prediction_reference_share",
            "Share of the training rows in each profile bin of an output value.",
            ["model", "version", "output", "bin"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.monitoring_rows = Counter(
            "serving_monitoring_rows",
            "Rows sampled into model monitoring.",
            ["model", "version"],
            registry=r,
        )
        self.monitoring_dropped = Counter(
            "serving_monitoring_dropped",
            "Sampled requests not monitored because the monitoring queue was full.",
            ["model"],
            registry=r,
        )
        self.monitoring_profile = Gauge(
            "serving_monitoring_profile",
            "1 for the version's monitoring state: on (a valid profile), invalid (profile refused: "
            "the reason is in the log and the admin index), none (no profile).",
            ["model", "version", "state"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.explain_requests = Counter(
            "serving_explain_requests",
            "Explain requests (POST .../explain, KServe v1 :explain) by model, version and outcome "
            "(REST status class); kept apart from serving_requests so inference latency stays its own.",
            ["model", "version", "outcome"],
            registry=r,
        )
        self.explain_duration = Histogram(
            "serving_explain_duration_seconds",
            "Explain request time inside the server, decode to encode.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.event_loop_lag = Histogram(
            "serving_event_loop_lag_seconds",
            "How late the event loop woke for a timer (sampled every loop_lag_interval_seconds): "
            "time it spent on other work (a long callback, garbage collection, the CPU taken by "
            "other processes) while requests and timers waited.",
            buckets=LOOP_LAG_BUCKETS,
            registry=r,
        )
        self._render: Exposition | None = None
        if self.multiprocess_dir is None:
            self._render = Exposition(r, exposition)
        self.lean = self.multiprocess_dir is None and exposition == FAST and lean_problem() is None
        """Hot-path series are written by lean recorders (serving.observability.lean), not
        the library's calls: one process, the fast exposition, and the start-up check passed."""
        self.statistics = Statistics()
        """Triton-shaped per-version statistics, fed by ``observe_request`` and the stages."""
        self.timeline = Timeline()
        """The last minutes of each version's requests, for the status page, fed by ``observe_request``."""
        self._request_children: dict[tuple[str, ...], tuple[Any, Any, Any, Any]] = {}
        self._inflight_children: dict[str, Any] = {}
        self._stages: dict[tuple[str, str], StageMetrics] = {}
        self._stage_children: dict[tuple[str, str], tuple[Any, Any, Any, Any, threading.Lock]] = {}
        self._predictions: dict[tuple[str, str, str], tuple[object, PredictionRecorder]] = {}

    # -- hot path ---------------------------------------------------------------------------
    def observe_request(
        self, model: str, version: str, variant: str, protocol: str, outcome: str, seconds: float
    ) -> None:
        key = (model, version, variant, protocol, outcome)
        children = self._request_children.get(key)
        if children is None:
            ok = outcome in OK_OUTCOMES
            stats = timeline = None  # requests that never reached a version have no statistics
            if model != UNKNOWN_MODEL and version != NO_VERSION:
                one = self.statistics.version(model, version)
                stats = one.succeeded if ok else one.failed
            if model != UNKNOWN_MODEL:  # the page shows a served model's unrouted failures too
                # "shadow": serving.core.router.SHADOW (a layer above), the copies' variant
                series = self.timeline.series(model, version, variant == "shadow")
                timeline = series.ok if ok else series.error
            # Lean recorders take no lock: observe_request runs on the event loop only.
            duration = self.request_duration
            children = (
                wrap(self.requests.labels(*key), self.requests, self.lean),
                wrap(duration.labels(model, version, variant, protocol), duration, self.lean),
                stats,
                timeline,
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)
        if children[2] is not None:
            children[2](seconds)
        if children[3] is not None:
            children[3](seconds)

    def observe_shadow(self, model: str, version: str, protocol: str, outcome: str, seconds: float) -> None:
        """One shadow copy run (never a request: serving_requests_total is the adapters')."""
        self.shadow_requests.labels(model, version, protocol, outcome).inc()
        self.shadow_duration.labels(model, version).observe(seconds)
        one = self.statistics.version(model, version)  # the version did run an inference
        (one.succeeded if outcome in OK_OUTCOMES else one.failed)(seconds)

    def inflight_for(self, model: str) -> Any:
        """The cached in-flight gauge child of ``model`` (for the event loop: the dataplane)."""
        child = self._inflight_children.get(model)
        if child is None:
            child = self._inflight_children[model] = wrap(
                self.inflight.labels(model), self.inflight, self.lean
            )
        return child

    def stage(self, model: str, version: str) -> StageMetrics:
        """Cached children for a predictor stage of one version (queue wait, compute, batch, depth)."""
        key = (model, version)
        found = self._stages.get(key)
        if found is None:
            label = version if self.stage_versions else ALL_VERSIONS
            shared = self._stage_children.get((model, label))
            if shared is None:  # versions summed under "all" share the children and their lock
                lean = self.lean
                shared = self._stage_children[(model, label)] = (
                    wrap(self.queue_wait.labels(model, label), self.queue_wait, lean),
                    wrap(self.compute_duration.labels(model, label), self.compute_duration, lean),
                    wrap(self.batch_size.labels(model, label), self.batch_size, lean),
                    self.queue_depth.labels(model, label),
                    threading.Lock(),
                )
            wait, compute, rows, depth, lock = shared
            found = self._stages[key] = StageMetrics(
                wait, compute, rows, depth, self.statistics.version(model, version), lock
            )  # Triton's statistics stay per version
        return found

    def prediction_recorder(
        self,
        model: str,
        version: str,
        variant: str,
        source: object,
        rules: Callable[[], Sequence[OutputRule]],
    ) -> PredictionRecorder:
        """The cached recorder of one (model, version, variant); rebuilt with ``rules()`` when
        ``source`` (the version's config object) is not the one it was built from."""
        key = (model, version, variant)
        found = self._predictions.get(key)
        if found is None or found[0] is not source:
            counter, lean = self.predictions, self.lean
            recorder = PredictionRecorder(  # fed by the dataplane, on the event loop
                rules(),
                lambda output, bucket: wrap(
                    counter.labels(model, version, variant, output, bucket), counter, lean
                ),
            )
            found = self._predictions[key] = (source, recorder)
        return found[1]

    # -- control path -----------------------------------------------------------------------
    def set_model_state(self, model: str, version: str, state: str) -> None:
        for known in MODEL_STATES:
            self.model_state.labels(model, version, known).set(1.0 if known == state else 0.0)

    def set_monitoring(self, model: str, version: str, state: str) -> None:
        """``state``: on, invalid or none (serving_monitoring_profile)."""
        for known in MONITORING_STATES:
            self.monitoring_profile.labels(model, version, known).set(1.0 if known == state else 0.0)

    def set_predict_paths(self, model: str, version: str, paths: dict[str, str]) -> None:
        """``paths``: batches ("small", "large") -> the path serving them."""
        for batches, path in paths.items():
            for known in PREDICT_PATHS:
                self.predict_path.labels(model, version, batches, known).set(1.0 if known == path else 0.0)

    def worker_values(self, name: str, model: str) -> dict[str, float]:
        """pid -> value of a ``liveall`` gauge for ``model``, over every live worker (empty
        without ``--workers N``). Reads the workers' files: for admin reads, not per request."""
        if self.multiprocess_dir is None:
            return {}
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        values: dict[str, float] = {}
        for family in merged.collect():
            if family.name != name:
                continue
            for sample in family.samples:
                if sample.labels.get("model") == model and "pid" in sample.labels:
                    values[sample.labels["pid"]] = sample.value
        return values

    def exposition(self) -> bytes:
        """The text exposition for ``/metrics``: this registry (serving.observability.exposition),
        or every worker's values merged (by the library: the merge is most of that scrape)."""
        if self._render is not None:
            return self._render()
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return bytes(_generate_latest(merged))


def setup_multiprocess_dir() -> str:
    """For a supervisor about to start workers: point ``PROMETHEUS_MULTIPROC_DIR`` (inherited
    by the workers) at a fresh temporary directory, removed when the supervisor exits. A
    directory the operator set already is used as is, emptied of stale value files."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        os.makedirs(given, exist_ok=True)
        for name in os.listdir(given):
            if name.endswith(".db"):
                os.remove(os.path.join(given, name))
        return given
    path = tempfile.mkdtemp(prefix="serving-metrics-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    os.environ[MULTIPROC_ENV] = path
    return path


def worker_exited(pid: int, path: str) -> None:
    """Drop a dead worker's live gauges (in-flight, queue depth, model state) from the merge.
    Its counters and histograms stay: they are part of the server's totals."""
    mark_process_dead(pid, path)  # type: ignore[no-untyped-call]

"""Server settings: one pydantic-settings class, built once by the CLI and passed down.

Every field can be set by an environment variable with the ``SERVING_`` prefix
(``SERVING_HTTP_PORT=9000``) or by the matching CLI flag, which wins.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ADMIN_TOKEN_MIN_LENGTH = 24
WEAK_ADMIN_TOKEN = (
    "SERVING_ADMIN_TOKEN is {length} character{s} long; it guards model load/unload and traffic "
    f"changes, so use at least {ADMIN_TOKEN_MIN_LENGTH}: SERVING_ADMIN_TOKEN=$(openssl rand -hex 24)"
)


REPOSITORY_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
"""A ``model_repo`` that names an object store (``s3://``…) rather than a folder."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SERVING_", extra="ignore")

    model_repo: Path = Path("model_repo")
    """Root of the model repository: ``<model>/config.yaml`` and ``<model>/<version>/``. Also
    an object-store URI (``s3://bucket/prefix``, ``gs://…``, ``az://…``, ``https://…``, same
    layout inside): it then moves to ``model_repo_uri`` and the server serves a verified copy
    assembled in ``model_cache_dir`` (docs/guides/object-storage.md)."""

    model_repo_uri: str | None = None
    """The object-store repository, set from ``model_repo`` when that is a URI. Credentials and
    endpoints come from each store's standard environment (``AWS_ACCESS_KEY_ID``,
    ``AWS_ENDPOINT_URL``, ``GOOGLE_APPLICATION_CREDENTIALS``, ``AZURE_STORAGE_ACCOUNT_NAME``…)."""

    model_cache_dir: Path | None = None
    """Content-addressed cache of a remote repository's files (by sha256), shared safely by
    several processes and pods (file locks). Unset: ``serving-model-cache`` in the system
    temporary directory. Put it on a volume (emptyDir, hostPath, PVC) so restarts reuse it."""

    model_cache_max_bytes: int = Field(0, ge=0)
    """Size bound of the model cache; past it the least recently used files that no assembled
    version links are evicted. 0 = no bound."""

    repository_retries: int = Field(4, ge=0, le=20)
    """Attempts after the first for a failed listing or download (an interrupted download
    resumes where it stopped), with exponential back-off from ``repository_backoff_seconds``."""

    repository_backoff_seconds: float = Field(0.5, gt=0.0, le=60.0)
    """First back-off of a retried listing or download; doubled each time, capped at 30 s."""

    repository_timeout_seconds: float = Field(30.0, gt=0.0, le=3600.0)
    """Per-request timeout against the object store (connect, and each request's whole time)."""

    @model_validator(mode="before")
    @classmethod
    def _repository_uri(cls, data: Any) -> Any:
        # A URI would be mangled by Path ("s3://b" -> "s3:/b"): keep it as text, apart.
        if isinstance(data, dict):
            repo = data.get("model_repo")
            if isinstance(repo, str) and REPOSITORY_URI.match(repo):
                data = {**data, "model_repo_uri": repo, "model_repo": Path("model_repo")}
        return data

    model_name: str | None = None
    """KServe layout: when ``model_repo`` itself holds ``config.yaml`` (one model's folder, as the
    storage initializer writes it to /mnt/models), serve it under this name (default: the folder's
    name). With a repository layout, serve only this model (startup fails if it is missing)."""

    host: str = "0.0.0.0"
    """Address both listeners bind to."""

    http_port: int = Field(8080, ge=0, le=65535)
    """REST port (OIP v2, KServe v1, /metrics). 0 picks a free port."""

    grpc_port: int = Field(8081, ge=-1, le=65535)
    """gRPC port (OIP v2 GRPCInferenceService). 0 picks a free port, -1 disables gRPC."""

    workers: int = Field(1, ge=1, le=64)
    """Worker processes sharing the ports; each loads its own runtimes."""

    strict: bool = False
    """Refuse to start when any model version fails to load (default: serve the rest)."""

    onnx_intra_op_threads: int = Field(1, ge=0)
    """onnxruntime intra-op threads per session (0 = onnxruntime's default, all cores)."""

    onnx_inter_op_threads: int = Field(1, ge=0)
    """onnxruntime inter-op threads per session (0 = onnxruntime's default)."""

    xgboost_nthread: int = Field(1, ge=0)
    """XGBoost threads per predict call. 1 is fastest for the small batches of online
    serving (OpenMP start-up dominates below a few hundred rows); 0 = all cores."""

    large_batch_rows: int = Field(512, ge=1)
    """Batches of at least this many rows run XGBoost with ``xgboost_large_batch_nthread``."""

    xgboost_large_batch_nthread: int = Field(0, ge=0)
    """XGBoost threads for large batches (0 = all cores)."""

    lightgbm_nthread: int = Field(1, ge=0)
    """LightGBM threads for batches that go through ``Booster.predict`` below
    ``large_batch_rows`` (0 = all cores)."""

    lightgbm_large_batch_nthread: int = Field(0, ge=0)
    """LightGBM threads for batches of at least ``large_batch_rows`` rows (0 = all cores)."""

    lightgbm_fast_path_max_rows: int = Field(32, ge=0, le=65536)
    """LightGBM batches with fewer rows than this go through its C single-row fast path, one
    call per row; larger ones through ``Booster.predict``, whose fixed cost per call is then
    the smaller one (crossover measured by loadtests/native_lightgbm.py). 0 = never."""

    fast_path: bool = True
    """Let runtimes answer through a verified fast path (serving/runtimes/fastpath.py): for
    XGBoost, an ONNX twin of the booster for small batches and XGBoost's C entry point for
    the rest. Each serves only after it matched the library's public predict at load.
    False = the library's public predict only (also per model: ``fast_path: false``)."""

    fast_path_max_rows: int = Field(32, ge=0, le=65536)
    """Batches with fewer rows than this go to the ONNX twin of a native booster; larger ones
    to the library, which is faster there (measured by loadtests/native_predict.py; see the
    benchmark docs). 0 or 1 = no twin."""

    fast_path_tolerance: float = Field(1e-6, ge=0.0)
    """Largest absolute output difference from the library's predict, on any probe row, at
    which a fast path may still serve."""

    fast_path_cache_dir: Path | None = None
    """Where converted twins are cached (keyed by the model file's content and the converter
    version), so a restart or another worker reuses them. Unset: ``serving-fastpath`` in the
    temp dir. Never inside the model repository, which may be read-only."""

    predict_threads: int = Field(2, ge=1)
    """Size of the thread pool that runs blocking predict calls off the event loop."""

    inline_predict_us: float = Field(100.0, ge=0.0, le=10_000.0)
    """Unbatched predict calls whose measured compute time (moving average per power-of-two
    row count) is at most this many microseconds run on the event loop instead of the
    thread pool: the hop to a pool thread costs 30-80 µs of CPU, more than such a call.
    0 = always use the pool."""

    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    """Largest request body accepted (413 above it)."""

    max_tensor_elements: int = Field(16 * 1024 * 1024, ge=1)
    """Largest number of elements in one input tensor (400 above it)."""

    max_inflight: int = Field(128, ge=0)
    """Requests per model version waiting for or running a predict call on the unbatched
    path; past it the server answers 503 + Retry-After / RESOURCE_EXHAUSTED at once.
    0 = unbounded. Batched versions are bounded by ``batching.max_queue_size`` instead."""

    request_timeout_ms: int = Field(0, ge=0)
    """Default deadline for requests whose caller sets none (REST ``x-request-timeout-ms``,
    gRPC deadline). Past it a request is not computed: 504 / DEADLINE_EXCEEDED. 0 = none."""

    drain_delay_seconds: float = Field(5.0, ge=0.0, le=600.0)
    """On SIGTERM the server turns not-ready at once but keeps accepting for this long, so
    load balancers remove the endpoint first; then it stops accepting."""

    drain_grace_seconds: float = Field(30.0, ge=0.0, le=3600.0)
    """After it stops accepting, how long the server waits for requests in flight to finish
    before it cancels them and exits."""

    http_header_timeout_seconds: float = Field(10.0, gt=0.0)
    """A client must send a request's complete headers within this time of connecting (or of
    starting the request); slower connections are closed (slowloris)."""

    http_body_timeout_seconds: float = Field(60.0, gt=0.0)
    """A client must send the whole request body within this time of its headers."""

    http_keep_alive_seconds: int = Field(30, ge=1)
    """Idle keep-alive connections are closed after this long."""

    stage_metrics: Literal["version", "model"] = "version"
    """Labels of the per-stage series (``serving_queue_wait_seconds``,
    ``serving_compute_duration_seconds``, ``serving_batch_size``, ``serving_queue_depth``):
    ``version`` keeps them per model version; ``model`` sums each model's versions under
    ``version="all"``, for servers with hundreds of versions, where these histograms are most
    of ``/metrics`` (request counters and Triton statistics stay per version)."""

    metrics_exposition: Literal["fast", "library"] = "fast"
    """How ``/metrics`` is rendered in a single process: ``fast`` walks the collectors itself,
    keeping each series' line prefixes, and its lines while its values stay the same, between
    scrapes (serving/observability/exposition.py: the same bytes, 10-30x less time with
    hundreds of versions, docs/guides/performance.md); ``library`` calls prometheus-client's
    ``generate_latest``. ``fast`` falls back to ``library`` with a warning when the installed
    prometheus-client fails its start-up check. With ``--workers N`` the workers' files are
    merged by the library either way. ``fast`` also records the hot path's series with lean
    recorders (serving/observability/lean.py: the same values, without the library's per-call
    checks and locks; the in-process metrics stage went from 6.1 to 2.7 µs a request,
    loadtests/hotpath.py) when one process serves and their own start-up check passes;
    ``library`` records through prometheus-client's calls too."""

    loop_lag_interval_seconds: float = Field(0.25, ge=0.0, le=60.0)
    """How often the event loop's lag is sampled into ``serving_event_loop_lag_seconds`` (a
    timer of this length, and how much later than due the loop ran it). 0 = off."""

    rest_infer_path: Literal["protocol", "asgi"] = "protocol"
    """Who answers the REST inference routes (``POST /v2/models/{m}[/versions/{v}]/infer``,
    ``/v1/models/{m}:predict``): ``protocol`` parses and answers them in the HTTP protocol
    (httptools callbacks straight to the dataplane, one socket write), every other route
    going to the ASGI app on the same port; ``asgi`` sends them through the ASGI app too (the
    fallback, and the comparison in benchmarks). ``protocol`` falls back to ``asgi`` with a
    warning when the installed uvicorn is not the version it was built on."""

    log_level: str = "info"
    """Python log level for the server's own logs."""

    access_log_sample_rate: float = Field(0.0, ge=0.0, le=1.0)
    """Share of inference requests written to stdout as JSON access-log lines
    (0 = off, the default; 1 = every request; 0.01 = one in a hundred, chosen at random)."""

    tracing: bool = False
    """Export OpenTelemetry traces of inference requests over OTLP (docs/observability.md).
    The standard ``OTEL_*`` variables configure the rest: ``OTEL_EXPORTER_OTLP_ENDPOINT``
    (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), ``OTEL_EXPORTER_OTLP_PROTOCOL``
    (``http/protobuf``), ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` (default
    ``parentbased_always_on``), ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``. Off (the
    default): the OpenTelemetry SDK is not even imported."""

    payload_log_sample_rate: float = Field(0.0, ge=0.0, le=1.0)
    """Share of successful inference requests whose inputs and outputs are sent as
    CloudEvents to the payload sinks (docs/observability.md); a model's
    ``payload_logging.sample_rate`` in config.yaml overrides it. 0 (the default): none."""

    payload_log_by: Literal["request", "key"] = "request"
    """Sample each request on its own (``request``), or by its sticky routing key (``key``:
    a caller's requests are all logged or none; requests without a key fall back to
    ``request``)."""

    payload_log_url: str | None = None
    """HTTP sink for payload events (a Knative broker, a Kafka bridge, any CloudEvents
    receiver): one POST per event in binary content mode, retried with back-off."""

    payload_log_dir: Path | None = None
    """Directory for payload events as rotating JSON-lines files (one per process)."""

    payload_log_queue_size: int = Field(10_000, ge=1, le=10_000_000)
    """Sampled requests waiting to be sent; past it they are dropped and counted
    (``serving_payload_events_dropped_total``), never waited for."""

    payload_log_batch_size: int = Field(64, ge=1, le=10_000)
    """Requests the sender takes off the queue at once."""

    payload_log_retries: int = Field(3, ge=0, le=20)
    """Retries of an event the HTTP sink did not accept (no connection, timeout, 5xx, 429)."""

    payload_log_backoff_seconds: float = Field(0.1, ge=0.0, le=60.0)
    """First retry delay; it doubles per retry, up to 5 s."""

    payload_log_timeout_seconds: float = Field(2.0, gt=0.0, le=120.0)
    """Connect and read timeout of one POST to the HTTP sink."""

    payload_log_max_file_mb: float = Field(64.0, gt=0.0)
    """A payload file is rotated once it reaches this size."""

    payload_log_max_files: int = Field(10, ge=1, le=100_000)
    """Rotated payload files kept per process (the oldest are deleted)."""

    payload_log_inference_service: str = ""
    """``ce-inferenceservicename`` of the events (the chart sets it from the pod's
    ``serving.kserve.io/inferenceservice`` label)."""

    payload_log_namespace: str = ""
    """``ce-namespace`` of the events (the chart sets it to the pod's namespace)."""

    payload_log_component: str = "predictor"
    """``ce-component`` of the events (KServe: predictor, transformer, explainer)."""

    payload_log_source: str = ""
    """``ce-source`` of the events; default ``/serving/<hostname>``."""

    monitoring: bool = True
    """Model monitoring (docs/guides/monitoring.md) for versions that have a ``profile.json``:
    input and prediction drift against the training profile. False: no version is monitored."""

    monitoring_sample_rate: float = Field(1.0, ge=0.0, le=1.0)
    """Share of a monitored version's answered requests whose rows enter its drift window
    (every row of a sampled request counts). PSI is a ratio of shares, so sampling does not
    bias it; it only makes the window fill more slowly."""

    monitoring_window_seconds: float = Field(300.0, gt=0.0, le=86400.0)
    """Length of the per-process drift window, in ten time slices (the window covers 90-100 %
    of it). The fleet's figure uses the recording rules' own range (5m)."""

    monitoring_min_rows: int = Field(100, ge=1, le=10_000_000)
    """``serving_feature_drift`` and ``serving_prediction_drift`` are NaN until the window
    holds this many rows: PSI over a handful of rows is noise."""

    monitoring_max_features: int = Field(32, ge=1, le=256)
    """Features monitored per version (the first N of the profile): bounds the series count,
    at most this many times (bins + 2) bin counters per version."""

    monitoring_queue_size: int = Field(4096, ge=1, le=1_000_000)
    """Sampled requests waiting for the monitoring thread; past it they are dropped and
    counted (``serving_monitoring_dropped_total``), never delayed."""

    monitoring_refresh_seconds: float = Field(1.0, gt=0.0, le=300.0)
    """How often the monitoring thread publishes drift gauges and moves the bin counters."""

    explain_max_rows: int = Field(64, ge=1, le=100_000)
    """Rows one explain request may carry (explanations cost many times a prediction)."""

    metrics_port: int = Field(-1, ge=-1, le=65535)
    """A second port that serves only ``GET /metrics`` (-1, the default: none; /metrics is
    always on the REST port too)."""

    admin_port: int = Field(-1, ge=-1, le=65535)
    """A separate port for the model control API (repository load/unload/reload, traffic
    policy changes). -1 (the default): admin routes are on the REST port. When set, they
    answer only there (the REST port answers 404 with a pointer, gRPC repository RPCs
    PERMISSION_DENIED), so a NetworkPolicy can keep inference callers away from them."""

    status_page: bool = False
    """Serve the status page (``/status``: models, versions, traffic split, rates, latency) on
    the REST port too. Off by default because it names the models; with ``admin_port`` set
    it is always served there (read-only, no token: the port is for operators)."""

    admin_token: str | None = None
    """Bearer token for the admin endpoints (repository load/unload, traffic policy, full
    failure reasons). Unset or empty: admin endpoints answer 403. At least
    ``ADMIN_TOKEN_MIN_LENGTH`` (24) characters, surrounding whitespace ignored (a Secret
    written from a file often ends in a newline); make one with ``openssl rand -hex 24``."""

    @field_validator("admin_token")
    @classmethod
    def _strong_admin_token(cls, token: str | None) -> str | None:
        token = (token or "").strip()
        if not token:
            return None
        if len(token) < ADMIN_TOKEN_MIN_LENGTH:
            raise ValueError(WEAK_ADMIN_TOKEN.format(length=len(token), s="" if len(token) == 1 else "s"))
        return token

    unload_grace_seconds: float = Field(30.0, ge=0.0, le=3600.0)
    """Unloading a version waits up to this long for its in-flight requests before closing it."""

    repository_poll_seconds: float = Field(0.0, ge=0.0, le=86400.0)
    """Re-read the model repository every N seconds, so version folders added or removed
    take effect without a restart. 0 = only on ``POST /v2/repository/reload``."""

    traffic_policy_dir: Path | None = None
    """The traffic-policy store (serving/control/policy.py): a directory with one
    ``<model>.yaml`` per model that every process of the deployment follows. On one host a
    plain directory (the admin API and ``serving rollout`` write it, so ``--workers N``
    accepts traffic changes); in Kubernetes a ConfigMap mounted as a directory (read-only,
    written by ``serving rollout``). Unset: with ``--workers N`` the supervisor gives its
    workers a private store (a temporary directory, removed at exit), so traffic changes still
    reach every worker; with one process, traffic changes live in that process. Set it to
    share one store between several servers."""

    traffic_policy_poll_seconds: float = Field(1.0, gt=0.0, le=3600.0)
    """How often each process checks the store's files for a change (one stat per model)."""

    prediction_metrics: bool = True
    """Count what each version predicts (``serving_predictions_total``: the predicted class, or
    the fixed bin of a score) for the rollout's prediction-shift test; false: not counted."""

    feedback_retention: int = Field(0, ge=0, le=10_000_000)
    """Answers remembered per process for ground truth (``POST /v2/models/{m}/feedback``,
    serving/core/feedback.py), the oldest dropped past it; requests without an ``id`` get one in
    the response. 0 (the default): off, nothing remembered."""

    feedback_max_age_seconds: float = Field(3600.0, gt=0.0)
    """Answers older than this can no longer be labelled (dropped and counted)."""

    shadow_queue_size: int = Field(64, ge=1, le=65536)
    """Shadow copies waiting to run; past it copies are dropped (and counted)."""

    router_seed: int | None = None
    """Seed of the router's random source (reproducible weighted splits); unset: random."""

    fault_target: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*:[1-9][0-9]*$")
    """Fault injection for rollout drills (serving/core/faults.py): ``model:version`` whose requests
    get ``fault_error_rate`` and ``fault_latency_ms``. Unset (the default): no faults. Never
    set it in production."""

    fault_error_rate: float = Field(0.0, ge=0.0, le=1.0)
    """Share of the target version's requests answered with an injected 500 / INTERNAL."""

    fault_latency_ms: float = Field(0.0, ge=0.0, le=60_000.0)
    """Latency added to each of the target version's requests, in milliseconds."""

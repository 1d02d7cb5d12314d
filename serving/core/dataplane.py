"""Protocol-agnostic inference, readiness and metadata: the only thing adapters call.

``DataPlane.infer`` is a short sequence of named steps (route, validate, admit, predict,
shape outputs), each a method tests call directly. It raises typed errors (serving.errors)
and returns results; counting requests and naming outcomes is the adapters' job
(serving.protocol.edge). It records what only it sees: in-flight requests and rejections (in one place, ``infer``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from serving import __version__, platforms
from serving.core.faults import FaultInjector
from serving.core.feedback import FeedbackStore, new_request_id
from serving.core.limits import RequestLimits
from serving.core.router import Route, Router
from serving.core.shadow import ShadowRunner
from serving.core.validation import validate_inputs
from serving.datatypes import numpy_dtype
from serving.errors import (
    DeadlineExceeded,
    Forbidden,
    InvalidInput,
    ModelNotReady,
    NotExplainable,
    Overloaded,
    RuntimeFault,
    ServingError,
)
from serving.inference import Array, InferenceRequest, InferenceResponse, Tensor
from serving.modelconfig import ModelConfig
from serving.observability.accesslog import AccessLog
from serving.observability.metrics import Metrics
from serving.observability.predictions import OutputRule, output_rules
from serving.predict.predictor import Predictor
from serving.repository.store import Model, ModelRepository, ModelVersion
from serving.runtimes.base import Explanation, explainer, feature_names
from serving.runtimes.fastpath import PathChoice

if TYPE_CHECKING:  # imported by serving.server only when switched on
    from serving.observability.monitoring import DriftMonitor
    from serving.observability.payloads import PayloadLogger
    from serving.observability.tracing import RequestTrace, Tracing

log = logging.getLogger("serving.core.dataplane")

# Triton's names for the protocol extensions (tritonclient and Triton's tools look them up).
EXTENSIONS = ["model_repository", "binary_tensor_data", "model_configuration", "statistics"]


@dataclass(frozen=True)
class ExplainResult:
    """An explanation of one request's rows by the version that would have answered it."""

    model: str
    version: str
    feature_names: list[str]
    explanation: Explanation


class DataPlane:
    def __init__(
        self,
        repository: ModelRepository,
        router: Router,
        metrics: Metrics,
        access_log: AccessLog | None = None,
        faults: FaultInjector | None = None,
        limits: RequestLimits | None = None,
        shadow: ShadowRunner | None = None,
        tracing: Tracing | None = None,
        payloads: PayloadLogger | None = None,
        prediction_metrics: bool = True,
        feedback: FeedbackStore | None = None,
    ) -> None:
        self.repository = repository
        self.tracing = tracing
        """Adapters start a request's span with it; None when tracing is off."""
        self.payloads = payloads
        """Adapters hand sampled payloads to it (at the edge); None when payload logging is off."""
        self.monitor: DriftMonitor | None = None
        """Takes answered requests of versions with a profile (model monitoring); None when off."""
        self.shadow = shadow if shadow is not None else ShadowRunner(metrics)
        self.router = router
        self.metrics = metrics
        self.access_log = access_log
        self.faults = faults
        self.limits = limits or RequestLimits()
        self.draining = False
        self.started = False
        self.prediction_metrics = prediction_metrics
        self.feedback = feedback
        """Remembers answers for ground truth (serving.core.feedback); None when off."""
        self._feedback_rules: dict[str, tuple[object, OutputRule | None]] = {}
        """Count each answer's predictions per version (serving.observability.predictions)."""

    # -- health -------------------------------------------------------------------------
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        """Ready once start-up loading finished, until a drain begins. A server whose models
        all failed is still ready (it answers with reasons); per-model readiness tells more."""
        return self.started and not self.draining

    def model_ready(self, name: str, version: str | None = None) -> bool:
        model = self.repository.get(name)
        if version is not None:
            return self.repository.version(name, version).ready
        return bool(model.ready_versions())

    # -- metadata -----------------------------------------------------------------------
    def server_metadata(self) -> dict[str, Any]:
        return {"name": "serving", "version": __version__, "extensions": EXTENSIONS}

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        model = self.repository.get(name)
        if version is not None:
            self.repository.version(name, version)
        if model.config is None:
            raise ModelNotReady(f"model '{name}' is unavailable: {model.public_error}")
        config = model.config
        versions = sorted(model.versions, key=int)
        meta: dict[str, Any] = {
            "name": name,
            "versions": [version] if version is not None else versions,
            "platform": platforms.get(config.platform).oip_platform,
            "inputs": [
                {"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in config.inputs
            ],
            "outputs": [
                {"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in config.outputs
            ],
        }
        entries = [model.versions[version]] if version is not None else [model.versions[v] for v in versions]
        states = {  # public: reasons without paths or library text (repository.py)
            e.version: {
                "state": e.state.value,
                **({"reason": e.public_reason} if e.reason else {}),
                **({"predict_path": _paths(e.predict_paths)} if e.predict_paths else {}),
            }
            for e in entries
        }
        if model.error:
            meta["parameters"] = {"state": "UNAVAILABLE", "reason": model.public_error}
        else:
            meta["parameters"] = {"version_states": states}
        return meta

    def model_config(self, name: str, version: str | None = None) -> ModelConfig:
        """The model's parsed config.yaml (the configuration extension; read-only)."""
        model = self.repository.get(name)
        if version is not None:
            self.repository.version(name, version)
        if model.config is None:
            raise ModelNotReady(f"model '{name}' is unavailable: {model.public_error}")
        return model.config

    def statistics(self, name: str | None = None, version: str | None = None) -> list[dict[str, Any]]:
        """Cumulative statistics (serving.observability.statistics) of one version, of every
        version of one model, or of every model (``name`` None), in version order."""
        if name is None:
            names = sorted(self.repository.models)
        else:
            self.check_model(name, version)
            names = [name]
        stats = self.metrics.statistics
        found: list[dict[str, Any]] = []
        for model in names:
            versions = (
                [version] if version is not None else sorted(self.repository.models[model].versions, key=int)
            )
            found.extend(stats.snapshot(model, v) for v in versions)
        return found

    def routing_header(self, name: str) -> str:
        """The request header that carries the model's sticky-routing key."""
        return self.router.routing_header(self.repository.models.get(name))

    def repository_index(self) -> list[dict[str, str]]:
        return self.repository.index()

    def knows(self, name: str) -> bool:
        """Whether ``name`` is a model of the repository (adapters label metrics with it)."""
        return name in self.repository.models

    def check_model(self, name: str, version: str | None = None) -> None:
        """Raise ModelNotFound for an unknown model or version: adapters call it before they
        read a body, so the most fundamental mistake is reported first."""
        model = self.repository.models.get(name)
        if model is None:
            self.repository.get(name)  # raises, with the message
        elif version is not None and version not in model.versions:
            self.repository.version(name, version)

    def first_input(self, name: str) -> tuple[str, str]:
        """(name, datatype) of the model's first input, for KServe v1's ``instances``; FP32
        under an empty name when the model's config did not load (the request then fails
        with the model's reason)."""
        config = self.repository.get(name).config
        if config is None:
            return "", "FP32"
        spec = config.inputs[0]
        return spec.name, spec.datatype

    # -- inference ----------------------------------------------------------------------
    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        """Route, validate, admit, predict, shape the outputs. Raises a ServingError (or
        CancelledError when the caller went away); the adapter counts the outcome."""
        model = self.repository.get(request.model)
        inflight = self.metrics.inflight_for(request.model)
        inflight.inc()
        trace = request.trace
        refusable = False
        try:
            started = time.time_ns() if trace is not None else 0
            route = self.route(model, request)
            entry = route.entry
            refusable = True  # until compute answers, a refusal is counted (once, below)
            # No await from routing to ``entry.inflight += 1`` in ``predict``: an unload that
            # starts after the route sees this request in flight and waits for it.
            inputs = self.validate(entry, request)
            predictor = self.admit(entry, request)
            if trace is not None:
                trace.child("routing", started, None, {"serving.model.version": entry.version})
            results = await self.predict(entry, predictor, inputs, request.deadline, trace)
            refusable = False
            if self.prediction_metrics:
                self.record_predictions(entry, route.variant, results)
            if self.feedback is not None:
                self.remember(entry, request, route.variant, results)
            if entry.profile is not None and self.monitor is not None:
                self.monitor_step(entry, inputs, results)
            if route.shadow is not None:  # a non-blocking put; never delays this answer
                self.shadow.submit(
                    route.shadow, entry.version, inputs, results, route.tolerance, request.edge, trace
                )
            return self.shape_outputs(entry, request, results, route.variant)
        except ServingError as exc:
            # The one place rejections are recorded: invalid inputs, passed deadlines and full
            # queues, whichever stage (validation, admission, the predictor's pool or the
            # batcher's queue) refused the request; the error table names the reason.
            if refusable and exc.rejection is not None:
                self.metrics.rejections.labels(request.model, exc.rejection).inc()
            raise
        finally:
            inflight.dec()

    def monitor_step(self, entry: ModelVersion, inputs: dict[str, Array], results: dict[str, Array]) -> None:
        """Hand the answered request to model monitoring; whatever happens there, the answer
        and its status stay as they are."""
        assert self.monitor is not None and entry.profile is not None
        try:
            self.monitor.observe(entry.model, entry.version, entry.profile, inputs, results)
        except Exception:
            log.exception(
                "model %s version %s: monitoring failed; the answer is unaffected", entry.model, entry.version
            )

    async def explain(self, request: InferenceRequest, max_rows: int) -> ExplainResult:
        """Route and validate as ``infer`` does, then the version's exact per-feature
        contributions (serving/runtimes/explain.py) on a thread. A version whose runtime
        cannot explain answers NotExplainable (422); more than ``max_rows`` rows, InvalidInput."""
        model = self.repository.get(request.model)
        entry = self.route(model, request).entry
        inputs = self.validate(entry, request)
        runtime = entry.runtime
        explain = explainer(runtime) if runtime is not None else None
        if explain is None or len(entry.config.inputs) != 1:
            raise NotExplainable(
                f"model '{entry.model}' version {entry.version} cannot explain: explanations come from "
                "XGBoost and LightGBM boosters, and from ONNX versions 'serving export' made from one"
            )
        x = inputs[entry.config.inputs[0].name]
        if x.shape[0] > max_rows:
            raise InvalidInput(
                f"explain takes at most {max_rows} rows per request; this one has {x.shape[0]}"
            )
        entry.inflight += 1  # an unload waits for it, as for an inference
        try:
            explanation = await asyncio.to_thread(explain, x)
        except Exception as exc:
            log.exception("model %s version %s failed to explain", entry.model, entry.version)
            raise RuntimeFault(
                f"model '{entry.model}' version {entry.version} failed to explain: {type(exc).__name__}"
            ) from None
        finally:
            entry.inflight -= 1
        width = x.shape[1]
        if entry.profile is not None:
            names = [c.name for c in entry.profile.features]
        else:
            names = (feature_names(runtime) if runtime is not None else None) or []
        if len(names) != width:
            names = [f"f{i}" for i in range(width)]
        return ExplainResult(entry.model, entry.version, names, explanation)

    def route(self, model: Model, request: InferenceRequest) -> Route:
        """The version to run (pin, weights, sticky key), recorded on the request."""
        key = request.routing_key
        if key is None and request.parameters and isinstance(request.parameters.get("routing_key"), str):
            key = request.parameters["routing_key"]
        route = self.router.select(model, request.version, key)
        request.served_version, request.variant = route.entry.version, route.variant
        return route

    def validate(self, entry: ModelVersion, request: InferenceRequest) -> dict[str, Array]:
        """The inputs checked against the version's signature, keyed by name."""
        return validate_inputs(entry.config, request)

    def admit(self, entry: ModelVersion, request: InferenceRequest) -> Predictor:
        """Refuse what cannot be served in time: a passed deadline, a version without a
        predict stage, a full version (unbatched path; batchers bound their own queue).
        Gives the request the server's default deadline when the caller set none."""
        if request.deadline is None and self.limits.default_timeout is not None:
            request.deadline = time.monotonic() + self.limits.default_timeout
        elif request.deadline is not None and time.monotonic() > request.deadline:
            raise DeadlineExceeded("the request's deadline passed before compute")
        predictor = entry.predictor
        if predictor is None:
            raise ModelNotReady(f"model '{request.model}' version {entry.version} is {entry.state.value}")
        limit = self.limits.max_inflight
        if limit and entry.inflight >= limit and not entry.config.batching.enabled:
            raise Overloaded(
                f"model '{request.model}' version {entry.version}: {entry.inflight} requests "
                f"already in flight (max_inflight {limit}); retry later"
            )
        return predictor

    async def predict(
        self,
        entry: ModelVersion,
        predictor: Predictor,
        inputs: dict[str, Array],
        deadline: float | None,
        trace: RequestTrace | None = None,
    ) -> dict[str, Array]:
        """Run the version's predict stage; a runtime exception becomes a RuntimeFault whose
        message names model and version (the traceback goes to the log). ``trace`` (a
        sampled request's) gets the stage's queue-wait and compute spans."""
        entry.inflight += 1
        try:
            if self.faults is not None:  # rollout drills only (Settings.fault_target)
                await self.faults.apply(entry.model, entry.version)
            if trace is not None:
                return await predictor.predict(inputs, deadline, trace)
            return await predictor.predict(inputs, deadline)
        except ServingError:
            raise
        except Exception as exc:
            log.exception("model %s version %s failed at predict", entry.model, entry.version)
            # First line only, bounded: runtimes (XGBoost) append C++ backtraces to messages.
            detail = (str(exc).strip().splitlines() or [""])[0][:300]
            raise RuntimeFault(
                f"model '{entry.model}' version {entry.version} failed: {type(exc).__name__}: {detail}"
            ) from None
        finally:
            entry.inflight -= 1

    def record_predictions(self, entry: ModelVersion, variant: str, results: dict[str, Array]) -> None:
        """Count the answer's predicted classes or score bins (the rollout's shift test reads them)."""
        config = entry.config
        self.metrics.prediction_recorder(
            entry.model, entry.version, variant, config, lambda: _prediction_rules(config)
        ).record(results)

    def remember(
        self, entry: ModelVersion, request: InferenceRequest, variant: str, results: dict[str, Array]
    ) -> None:
        """Keep the answer for ground truth, under the request's id (a new one when it had none)."""
        assert self.feedback is not None
        config = entry.config
        cached = self._feedback_rules.get(entry.model)
        if cached is None or cached[0] is not config:
            rules = _prediction_rules(config)
            first = next((r for r in rules if r.kind == "class"), rules[0] if rules else None)
            cached = self._feedback_rules[entry.model] = (config, first)
        if cached[1] is None:
            return
        if request.id is None:
            request.id = new_request_id()
        self.feedback.remember(request.id, entry.model, entry.version, variant, cached[1], results)

    def submit_feedback(self, name: str, doc: Any) -> dict[str, Any]:
        """``POST /v2/models/{m}/feedback``: labels joined to remembered answers (all or none)."""
        self.check_model(name)
        if self.feedback is None:
            raise Forbidden("ground truth is off: set SERVING_FEEDBACK_RETENTION to remember answers")
        return self.feedback.submit(name, doc)

    @staticmethod
    def shape_outputs(
        entry: ModelVersion, request: InferenceRequest, results: dict[str, Array], variant: str
    ) -> InferenceResponse:
        """The requested outputs (all by default) in the config's order and datatypes."""
        wanted = [o.name for o in request.outputs] if request.outputs else None
        outputs = []
        for spec in entry.config.outputs:
            if wanted is not None and spec.name not in wanted:
                continue
            array = results[spec.name]
            dtype = numpy_dtype(spec.datatype)
            if array.dtype != dtype and spec.datatype != "BYTES":
                array = array.astype(dtype)
            outputs.append(Tensor(spec.name, spec.datatype, array.shape, array))
        return InferenceResponse(request.model, entry.version, outputs, request.id, variant=variant)


def _prediction_rules(config: ModelConfig) -> tuple[OutputRule, ...]:
    return output_rules([(o.name, o.datatype, o.shape) for o in config.outputs], config.prediction_buckets)


def _paths(paths: dict[str, PathChoice]) -> dict[str, dict[str, str]]:
    """Metadata: batches -> {"path": ..., "reason": why a faster path does not serve}."""
    return {
        batches: {"path": choice.path, **({"reason": choice.reason} if choice.reason else {})}
        for batches, choice in paths.items()
    }

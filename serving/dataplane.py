"""Protocol-agnostic inference, readiness and metadata: the only thing adapters call."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from serving import __version__
from serving.accesslog import AccessLog
from serving.datatypes import numpy_dtype
from serving.errors import (
    DeadlineExceeded,
    InvalidInput,
    ModelNotReady,
    Overloaded,
    RuntimeFault,
    ServingError,
)
from serving.faults import FaultInjector
from serving.limits import RequestLimits
from serving.metrics import Metrics
from serving.repository import ModelRepository
from serving.router import Router
from serving.runtimes.base import PLATFORMS
from serving.runtimes.fastpath import PathChoice
from serving.shadow import ShadowRunner
from serving.types import InferenceRequest, InferenceResponse, Tensor
from serving.validation import validate_inputs

log = logging.getLogger("serving.dataplane")

EXTENSIONS = ["model_repository", "binary_tensor_data", "statistics_metrics"]


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
    ) -> None:
        self.repository = repository
        self.shadow = shadow if shadow is not None else ShadowRunner(metrics)
        self.router = router
        self.metrics = metrics
        self.access_log = access_log
        self.faults = faults
        self.limits = limits or RequestLimits()
        self.draining = False
        self.started = False

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
            "platform": PLATFORMS[config.platform],
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

    def routing_header(self, name: str) -> str:
        """The request header that carries the model's sticky-routing key."""
        return self.router.routing_header(self.repository.models.get(name))

    def repository_index(self) -> list[dict[str, str]]:
        return self.repository.index()

    # -- inference ----------------------------------------------------------------------
    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        start = time.perf_counter()
        version_name = "none"
        variant = "stable"
        outcome_error: ServingError | None = None
        succeeded = cancelled = False
        model = self.repository.models.get(request.model)
        inflight = self.metrics.inflight_for(request.model) if model is not None else None
        if request.deadline is None and self.limits.default_timeout is not None:
            request.deadline = time.monotonic() + self.limits.default_timeout
        if inflight is not None:
            inflight.inc()
        try:
            if model is None:
                self.repository.get(request.model)  # raises ModelNotFound with the message
                raise AssertionError("unreachable")
            key = request.routing_key
            if key is None and request.parameters and isinstance(request.parameters.get("routing_key"), str):
                key = request.parameters["routing_key"]
            route = self.router.select(model, request.version, key)
            entry = route.entry
            version_name, variant = entry.version, route.variant
            # No await between routing and ``entry.inflight += 1`` below: an unload that
            # starts after the route sees this request in flight and waits for it.
            try:
                inputs = validate_inputs(entry.config, request)
            except InvalidInput:
                self.metrics.rejections.labels(request.model, "invalid").inc()
                raise
            if request.deadline is not None and time.monotonic() > request.deadline:
                self.metrics.rejections.labels(request.model, "deadline").inc()
                raise DeadlineExceeded("the request's deadline passed before compute")
            predictor = entry.predictor
            if predictor is None:
                raise ModelNotReady(f"model '{request.model}' version {entry.version} is {entry.state.value}")
            limit = self.limits.max_inflight
            if limit and entry.inflight >= limit and not entry.config.batching.enabled:
                self.metrics.rejections.labels(request.model, "overload").inc()
                raise Overloaded(
                    f"model '{request.model}' version {entry.version}: {entry.inflight} requests "
                    f"already in flight (max_inflight {limit}); retry later"
                )
            entry.inflight += 1
            try:
                if self.faults is not None:  # rollout drills only (Settings.fault_target)
                    await self.faults.apply(request.model, entry.version)
                results = await predictor.predict(inputs, request.deadline)
            except ServingError:
                raise
            except Exception as exc:
                log.exception("model %s version %s failed at predict", request.model, entry.version)
                # First line only, bounded: runtimes (XGBoost) append C++ backtraces to messages.
                detail = (str(exc).strip().splitlines() or [""])[0][:300]
                raise RuntimeFault(
                    f"model '{request.model}' version {entry.version} failed: {type(exc).__name__}: {detail}"
                ) from None
            finally:
                entry.inflight -= 1
            if route.shadow is not None:  # a non-blocking put; never delays this answer
                self.shadow.submit(
                    route.shadow, entry.version, inputs, results, route.tolerance, request.protocol
                )
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
            response = InferenceResponse(request.model, entry.version, outputs, request.id, variant=variant)
            succeeded = True
            return response
        except ServingError as exc:
            outcome_error = exc
            raise
        except asyncio.CancelledError:
            cancelled = True  # the client went away (disconnect, gRPC deadline or cancel)
            raise
        finally:
            if inflight is not None:
                inflight.dec()
            if succeeded:
                outcome = "2xx" if request.protocol == "rest" else "OK"
            elif cancelled:
                outcome = "4xx" if request.protocol == "rest" else "CANCELLED"
            elif outcome_error is None:  # an unexpected fault the adapter turns into a 500
                outcome = "5xx" if request.protocol == "rest" else "INTERNAL"
            elif request.protocol == "rest":
                outcome = f"{outcome_error.http_status // 100}xx"
            else:
                outcome = outcome_error.grpc_code
            seconds = time.perf_counter() - start
            if model is not None:  # unknown names stay out of the labels (cardinality)
                self.metrics.observe_request(
                    request.model, version_name, variant, request.protocol, outcome, seconds
                )
            if self.access_log is not None:
                self.access_log.record(
                    request.id,
                    request.model[:128],
                    version_name,
                    variant,
                    request.protocol,
                    outcome,
                    seconds,
                    outcome_error,
                )


def _paths(paths: dict[str, PathChoice]) -> dict[str, dict[str, str]]:
    """Metadata: batches -> {"path": ..., "reason": why a faster path does not serve}."""
    return {
        batches: {"path": choice.path, **({"reason": choice.reason} if choice.reason else {})}
        for batches, choice in paths.items()
    }

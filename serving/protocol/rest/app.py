"""The REST adapter: OIP v2 and KServe v1 over HTTP.

``create_rest_app`` returns one ASGI app. Inference routes (the hot path) are served by a
small raw-ASGI handler in front of FastAPI (unless the protocol-level path of
serving.protocol.rest.direct answers them first): it reads the body, decodes it with orjson
into numpy, awaits the dataplane and writes the bytes, skipping FastAPI's routing, dependency
solving and response classes, which cost more than the model. Everything else (health,
metadata, repository, /metrics) is an ordinary FastAPI route. Both map errors through the
one table in serving.errors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.control.models import ModelControl
from serving.core.dataplane import DataPlane
from serving.errors import ClientClosedRequest, ServingError
from serving.inference import InferenceRequest
from serving.labels import NO_VERSION, UNKNOWN_MODEL
from serving.modelconfig import check_model_name, check_version_name
from serving.observability.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from serving.protocol import triton
from serving.protocol.rest import codec
from serving.protocol.rest.admin import admin_elsewhere, admin_routes, read_routes
from serving.protocol.rest.inference import RestInference, Target, error_body, parse_infer_path
from serving.protocol.rest.onewrite import try_respond
from serving.protocol.rest.schema import INFERENCE_ROUTES
from serving.protocol.rest.status import status_routes
from serving.settings import Settings

log = logging.getLogger("serving.rest")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class JSONBody(Response):
    """JSON with orjson for the non-inference routes (FastAPI deprecated its ORJSONResponse)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


RAW_ROUTES = tuple((r.method, r.path, r.summary) for r in INFERENCE_ROUTES)
"""The routes the raw-ASGI handler serves, as described in schema.py (docs/reference lists them
beside the OpenAPI routes, with their messages)."""


class InferenceApp:
    """Raw-ASGI path for infer/predict (and explain); delegates every other request to ``fallback``.

    The steps of an inference request (checks in the caller's order, decode, dataplane,
    encode, counting at the edge) are ``inference``'s (serving.protocol.rest.inference),
    shared with the protocol-level path (serving.protocol.rest.direct), which answers the
    infer/predict routes before ASGI unless ``Settings.rest_infer_path`` is ``asgi``."""

    def __init__(self, settings: Settings, dataplane: DataPlane, fallback: FastAPI) -> None:
        self._dataplane = dataplane
        self._fallback = fallback
        self.inference = RestInference(settings, dataplane)
        self._explain_rows = settings.explain_max_rows

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._fallback(scope, receive, send)
            return
        target = parse_infer_path(scope["path"])
        if target is None:
            await self._fallback(scope, receive, send)
            return
        if target.kind.endswith("-explain"):
            await self._explain(scope, receive, send, target)
            return
        inference = self.inference
        start = time.perf_counter()
        arrived = time.monotonic()
        trace = None
        if inference.tracing is not None:
            trace = inference.begin_trace(
                scope["method"],
                scope["path"],
                scope.get("scheme", "http"),
                scope.get("http_version", "1.1"),
                scope["headers"],
                target,
            )
        headers = dict(scope["headers"])
        try:
            inference.check_head(scope["method"], scope["path"], target, headers)
            body = await self._read_body(receive)
        except asyncio.CancelledError as exc:
            inference.edge.failure(target.model, None, exc, time.perf_counter() - start, trace)
            raise
        except Exception as exc:
            status, body, response_headers = inference.fail(target, None, exc, start, trace)
        else:
            status, body, response_headers = await inference.serve(
                target, headers, body, arrived, start, trace
            )
        if try_respond(send, status, response_headers, body):
            return
        response_headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": body})

    async def _explain(self, scope: Scope, receive: Receive, send: Send, target: Target) -> None:
        """POST /v2/models/{m}[/versions/{v}]/explain and KServe v1 /v1/models/{m}:explain: an
        inference body in, exact per-feature contributions out (DataPlane.explain). Counted in
        serving_explain_requests_total, apart from inference."""
        start = time.perf_counter()
        model, version, kind = target
        decoded = Target(model, version, kind.removesuffix("-explain"))
        request: InferenceRequest | None = None
        try:
            headers = dict(scope["headers"])
            self.inference.check_head(scope["method"], scope["path"], decoded, headers)
            body = await self._read_body(receive)
            request = self.inference.decode(body, headers, decoded, start)
            result = await self._dataplane.explain(request, self._explain_rows)
            status, body = 200, codec.encode_explanation(result)
            response_headers = [
                (b"content-type", b"application/json"),
                (b"x-model-version", result.version.encode()),
            ]
            outcome = "2xx"
        except ServingError as exc:
            status, body, response_headers = error_body(exc)
            outcome = f"{exc.http_status // 100}xx"
        except asyncio.CancelledError:
            self._count_explain(model, request, "cancelled", start)
            raise
        except Exception:
            log.exception("unexpected error serving %s", scope["path"])
            status, body = 500, b'{"error":"internal server error"}'
            response_headers = [(b"content-type", b"application/json")]
            outcome = "5xx"
        self._count_explain(model, request, outcome, start)
        response_headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": body})

    def _count_explain(
        self, model: str, request: InferenceRequest | None, outcome: str, start: float
    ) -> None:
        metrics = self._dataplane.metrics
        label = model if self._dataplane.knows(model) else UNKNOWN_MODEL
        version = request.served_version if request is not None and request.served_version else NO_VERSION
        metrics.explain_requests.labels(label, version, outcome).inc()
        metrics.explain_duration.labels(label, version).observe(time.perf_counter() - start)

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientClosedRequest("client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                self.inference.check_size(size)
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _error_handlers(api: FastAPI) -> None:
    """Every error as ``{"error": ...}`` through the one table in serving.errors."""

    @api.exception_handler(ServingError)
    async def _serving_error(request: Request, exc: ServingError) -> Response:
        status, body, headers = error_body(exc)
        return Response(body, status_code=status, headers={k.decode(): v.decode() for k, v in headers})

    @api.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail
        if exc.status_code == 404:
            message = f"no route for {request.method} {request.url.path}"
        elif exc.status_code == 405 and exc.headers:
            message = f"{request.method} is not allowed on {request.url.path}; use {exc.headers.get('Allow')}"
        # 405 carries Starlette's ``Allow`` header (the route's methods).
        return JSONBody({"error": message}, status_code=exc.status_code, headers=exc.headers)

    @api.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONBody({"error": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=400)


def create_rest_app(
    settings: Settings, dataplane: DataPlane, control: ModelControl | None = None
) -> InferenceApp:
    """The REST ASGI app for one dataplane. No globals: build as many as you like.
    ``control`` serves the model control API (a fresh one over ``dataplane`` if not given)."""
    api = FastAPI(
        title="serving",
        description="Open Inference Protocol (v2) and KServe v1 REST API",
        default_response_class=JSONBody,
        docs_url="/docs",
        redoc_url=None,
    )

    _error_handlers(api)

    def _model(name: str, version: str | None = None) -> None:
        check_model_name(name)
        if version is not None:
            check_version_name(version)

    @api.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return dataplane.server_metadata()

    @api.get("/v2/health/live")
    async def live() -> Response:
        return JSONBody({"live": True})

    @api.get("/v2/health/ready")
    async def ready() -> Response:
        is_ready = dataplane.ready()
        return JSONBody({"ready": is_ready}, status_code=200 if is_ready else 503)

    # Triton's statistics and model configuration extensions (before /v2/models/{name}).
    @api.get("/v2/models/stats")
    async def all_statistics() -> dict[str, Any]:
        return {"model_stats": dataplane.statistics()}

    @api.get("/v2/models/{name}/stats")
    async def model_statistics(name: str) -> dict[str, Any]:
        _model(name)
        return {"model_stats": dataplane.statistics(name)}

    @api.get("/v2/models/{name}/versions/{version}/stats")
    async def model_version_statistics(name: str, version: str) -> dict[str, Any]:
        _model(name, version)
        return {"model_stats": dataplane.statistics(name, version)}

    @api.get("/v2/models/{name}/config")
    async def model_config(name: str) -> dict[str, Any]:
        _model(name)
        return triton.model_config(name, dataplane.model_config(name))

    @api.get("/v2/models/{name}/versions/{version}/config")
    async def model_version_config(name: str, version: str) -> dict[str, Any]:
        _model(name, version)
        return triton.model_config(name, dataplane.model_config(name, version))

    @api.get("/v2/models/{name}")
    async def model_metadata(name: str) -> dict[str, Any]:
        _model(name)
        return dataplane.model_metadata(name)

    @api.get("/v2/models/{name}/versions/{version}")
    async def model_version_metadata(name: str, version: str) -> dict[str, Any]:
        _model(name, version)
        return dataplane.model_metadata(name, version)

    @api.get("/v2/models/{name}/ready")
    async def model_ready(name: str) -> Response:
        _model(name)
        is_ready = dataplane.model_ready(name)
        return JSONBody({"name": name, "ready": is_ready}, status_code=200 if is_ready else 503)

    @api.get("/v2/models/{name}/versions/{version}/ready")
    async def model_version_ready(name: str, version: str) -> Response:
        _model(name, version)
        is_ready = dataplane.model_ready(name, version)
        return JSONBody(
            {"name": name, "version": version, "ready": is_ready}, status_code=200 if is_ready else 503
        )

    # GET|POST /v2/repository/index, load/unload/reload, traffic policy (serving/control/models.py);
    # with SERVING_ADMIN_PORT the changes are served only on that port (create_admin_app).
    control = control or ModelControl(settings, dataplane)
    api.include_router(read_routes(control))
    if settings.admin_port < 0:
        api.include_router(admin_routes(control))
    else:
        api.include_router(admin_elsewhere(settings.admin_port))
    if settings.status_page:
        api.include_router(status_routes(control, settings.workers))

    # KServe v1
    @api.get("/v1/models")
    async def v1_models() -> dict[str, Any]:
        return {"models": sorted(dataplane.repository.models)}

    @api.get("/v1/models/{name}")
    async def v1_model(name: str) -> dict[str, Any]:
        _model(name)
        return {"name": name, "ready": dataplane.model_ready(name)}

    @api.get("/metrics")
    async def metrics() -> Response:
        # On a thread: with hundreds of versions the text takes tens of milliseconds to build,
        # which on the event loop would stall every connection that long at each scrape;
        # on a thread the loop gets the GIL back every switch interval (5 ms).
        text = await asyncio.to_thread(dataplane.metrics.exposition)
        return Response(text, media_type=METRICS_CONTENT_TYPE)

    # Unknown routes and methods answer {"error": ...} like every other error.
    api.add_api_route("/", lambda: JSONBody({"name": "serving", "v2": "/v2"}), methods=["GET"])
    return InferenceApp(settings, dataplane, api)


def create_admin_app(settings: Settings, control: ModelControl) -> FastAPI:
    """The model control API and the status page, for ``SERVING_ADMIN_PORT``."""
    api = FastAPI(
        title="serving admin",
        description="Model control: repository load/unload/reload and traffic policies",
        default_response_class=JSONBody,
        docs_url=None,
        redoc_url=None,
    )
    _error_handlers(api)
    api.include_router(read_routes(control))
    api.include_router(admin_routes(control))
    api.include_router(status_routes(control, settings.workers))  # read-only: /status
    return api

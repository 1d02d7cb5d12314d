"""The REST adapter: OIP v2 and KServe v1 over HTTP.

``create_rest_app`` returns one ASGI app. Inference routes (the hot path) are served by a
small raw-ASGI handler in front of FastAPI: it reads the body, decodes it with orjson into
numpy, awaits the dataplane and writes the bytes, skipping FastAPI's routing, dependency
solving and response classes, which cost more than the model. Everything else (health,
metadata, repository, /metrics) is an ordinary FastAPI route. Both map errors through the
one table in serving.errors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.control.models import ModelControl
from serving.core.dataplane import DataPlane
from serving.errors import (
    ClientClosedRequest,
    InvalidInput,
    PayloadTooLarge,
    ServingError,
    UnsupportedMediaType,
)
from serving.inference import InferenceRequest, InferenceResponse
from serving.labels import NO_VERSION, UNKNOWN_MODEL
from serving.modelconfig import check_model_name, check_version_name
from serving.observability.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from serving.protocol import triton
from serving.protocol.edge import REST, EdgeRecorder
from serving.protocol.rest import binary, codec
from serving.protocol.rest.admin import admin_elsewhere, admin_routes, read_routes
from serving.protocol.rest.deadline import TIMEOUT_HEADER, deadline_from_header
from serving.protocol.rest.onewrite import try_respond
from serving.protocol.rest.schema import INFERENCE_ROUTES
from serving.settings import Settings

if TYPE_CHECKING:
    from serving.observability.tracing import RequestTrace

log = logging.getLogger("serving.rest")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON_TYPES = (
    b"application/json",
    b"application/octet-stream",
    b"application/vnd.sagemaker-triton.binary+json",
)


class JSONBody(Response):
    """JSON with orjson for the non-inference routes (FastAPI deprecated its ORJSONResponse)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class MethodNotAllowed(InvalidInput):
    """A known route called with a method it does not serve (REST only)."""

    http_status = 405


def error_body(exc: ServingError) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    headers = [(b"content-type", b"application/json")]
    if exc.http_status == 405:
        headers.append((b"allow", b"POST"))  # the inference routes' one method
    elif exc.http_status == 503:
        headers.append((b"retry-after", b"1"))
    elif exc.http_status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="serving-admin"'))
    return exc.http_status, orjson.dumps({"error": exc.message}), headers


RAW_ROUTES = tuple((r.method, r.path, r.summary) for r in INFERENCE_ROUTES)
"""The routes the raw-ASGI handler serves, as described in schema.py (docs/reference lists them
beside the OpenAPI routes, with their messages)."""


def _parse_infer_path(path: str) -> tuple[str, str | None, str] | None:
    """'/v2/models/m[/versions/v]/infer' -> (m, v, 'v2'); '/v1/models/m:predict' -> (m, None, 'v1');
    the explain routes ('.../explain', ':explain') -> kinds 'v2-explain' and 'v1-explain'."""
    if path.startswith("/v2/models/"):
        if path.endswith("/infer"):
            parts, kind = path[11:-6].split("/"), "v2"
        elif path.endswith("/explain"):
            parts, kind = path[11:-8].split("/"), "v2-explain"
        else:
            return None
        if len(parts) == 1:
            return parts[0], None, kind
        if len(parts) == 3 and parts[1] == "versions":
            return parts[0], parts[2], kind
        return None
    if path.startswith("/v1/models/"):
        if path.endswith(":predict"):
            name, kind = path[11:-8], "v1"
        elif path.endswith(":explain"):
            name, kind = path[11:-8], "v1-explain"
        else:
            return None
        return (name, None, kind) if "/" not in name else None
    return None


class InferenceApp:
    """Raw-ASGI fast path for infer/predict; delegates every other request to ``fallback``.

    Every request to an inference route is counted here once (serving.protocol.edge),
    whatever happens to it. Errors come in the order a caller needs them: the route's
    method, then an unknown model or version (404, before the body is read), then the
    content type, then the body, then its tensors."""

    def __init__(self, settings: Settings, dataplane: DataPlane, fallback: FastAPI) -> None:
        self._dataplane = dataplane
        self._fallback = fallback
        self._max_body = settings.max_body_bytes
        self._max_elements = settings.max_tensor_elements
        self._edge = EdgeRecorder(REST, dataplane)
        self._tracing = dataplane.tracing
        self._explain_rows = settings.explain_max_rows

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._fallback(scope, receive, send)
            return
        target = _parse_infer_path(scope["path"])
        if target is None:
            await self._fallback(scope, receive, send)
            return
        if target[2].endswith("-explain"):
            await self._explain(scope, receive, send, target)
            return
        start = time.perf_counter()
        request: InferenceRequest | None = None
        trace = self._begin_trace(scope, target) if self._tracing is not None else None
        try:
            if scope["method"] != "POST":
                raise MethodNotAllowed(f"{scope['method']} is not allowed on {scope['path']}; use POST")
            request = await self._decode(scope, receive, *target)
            if trace is not None:
                request.trace = trace
                trace.child("decode", trace.started)
            response = await self._dataplane.infer(request)
            if trace is None:
                status, body, headers = self._encode(request, response, target[2])
            else:
                encoding = time.time_ns()
                status, body, headers = self._encode(request, response, target[2])
                trace.child("encode", encoding)
        except ServingError as exc:
            self._edge.failure(target[0], request, exc, time.perf_counter() - start, trace)
            status, body, headers = error_body(exc)
        except asyncio.CancelledError as exc:
            self._edge.failure(target[0], request, exc, time.perf_counter() - start, trace)
            raise
        except Exception as exc:  # never a traceback to the client; the log has it
            log.exception("unexpected error serving %s", scope["path"])
            self._edge.failure(target[0], request, exc, time.perf_counter() - start, trace)
            status, body, headers = (
                500,
                b'{"error":"internal server error"}',
                [(b"content-type", b"application/json")],
            )
        else:
            self._edge.success(request, response, time.perf_counter() - start)
        if try_respond(send, status, headers, body):
            return
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _explain(
        self, scope: Scope, receive: Receive, send: Send, target: tuple[str, str | None, str]
    ) -> None:
        """POST /v2/models/{m}[/versions/{v}]/explain and KServe v1 /v1/models/{m}:explain: an
        inference body in, exact per-feature contributions out (DataPlane.explain). Counted in
        serving_explain_requests_total, apart from inference."""
        start = time.perf_counter()
        model, version, kind = target
        request: InferenceRequest | None = None
        try:
            if scope["method"] != "POST":
                raise MethodNotAllowed(f"{scope['method']} is not allowed on {scope['path']}; use POST")
            request = await self._decode(scope, receive, model, version, kind.removesuffix("-explain"))
            result = await self._dataplane.explain(request, self._explain_rows)
            status, body = 200, codec.encode_explanation(result)
            headers = [(b"content-type", b"application/json"), (b"x-model-version", result.version.encode())]
            outcome = "2xx"
        except ServingError as exc:
            status, body, headers = error_body(exc)
            outcome = f"{exc.http_status // 100}xx"
        except asyncio.CancelledError:
            self._count_explain(model, request, "cancelled", start)
            raise
        except Exception:
            log.exception("unexpected error serving %s", scope["path"])
            status, body = 500, b'{"error":"internal server error"}'
            headers = [(b"content-type", b"application/json")]
            outcome = "5xx"
        self._count_explain(model, request, outcome, start)
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _count_explain(
        self, model: str, request: InferenceRequest | None, outcome: str, start: float
    ) -> None:
        metrics = self._dataplane.metrics
        label = model if self._dataplane.knows(model) else UNKNOWN_MODEL
        version = request.served_version if request is not None and request.served_version else NO_VERSION
        metrics.explain_requests.labels(label, version, outcome).inc()
        metrics.explain_duration.labels(label, version).observe(time.perf_counter() - start)

    def _begin_trace(self, scope: Scope, target: tuple[str, str | None, str]) -> RequestTrace | None:
        """The request's server span (tracing on), continuing the caller's W3C trace context."""
        assert self._tracing is not None
        from serving.observability.tracing import header_carrier

        model, _, kind = target
        route = "/v1/models/{model}:predict" if kind == "v1" else "/v2/models/{model}/infer"
        attributes = {
            "http.request.method": scope["method"],
            "http.route": route,
            "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http"),
            "network.protocol.version": scope.get("http_version", "1.1"),
        }
        return self._tracing.begin("rest", model, header_carrier(scope["headers"]), attributes)

    async def _read_body(self, scope: Scope, receive: Receive) -> tuple[bytes, dict[bytes, bytes]]:
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type", b"application/json").split(b";", 1)[0].strip().lower()
        if content_type and content_type not in _JSON_TYPES and not content_type.endswith(b"+json"):
            raise UnsupportedMediaType(
                f"content type '{content_type.decode(errors='replace')}' is not supported; send application/json"
            )
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            raise PayloadTooLarge(
                f"request body of {int(length)} bytes exceeds the limit of {self._max_body}"
            )
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientClosedRequest("client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > self._max_body:
                    raise PayloadTooLarge(f"request body exceeds the limit of {self._max_body} bytes")
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return body, headers

    async def _decode(
        self, scope: Scope, receive: Receive, model: str, version: str | None, kind: str
    ) -> InferenceRequest:
        arrived = time.monotonic()
        check_model_name(model)
        if version is not None:
            check_version_name(version)
        self._dataplane.check_model(model, version)
        body, headers = await self._read_body(scope, receive)
        if kind == "v1":
            input_name, datatype = self._dataplane.first_input(model)
            request = codec.decode_v1_request(body, model, input_name, datatype, self._max_elements)
        elif (json_length := headers.get(binary.HEADER)) is not None:
            length = binary.header_length(json_length, len(body))
            request = binary.decode_request(body, length, model, version, self._max_elements)
        else:
            request = codec.decode_request(body, model, version, self._max_elements)
        request.edge = REST
        key = headers.get(self._dataplane.routing_header(model).encode())
        if key is not None:
            request.routing_key = key.decode(errors="replace")
        timeout = headers.get(TIMEOUT_HEADER)
        if timeout is not None:
            request.deadline = deadline_from_header(timeout, arrived)
        return request

    @staticmethod
    def _encode(
        request: InferenceRequest, response: InferenceResponse, kind: str
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        if kind == "v2" and (raw_outputs := binary.binary_outputs(request)):
            out, length = binary.encode_response(response, raw_outputs)
            return (
                200,
                out,
                [
                    (b"content-type", b"application/octet-stream"),
                    (binary.HEADER, str(length).encode()),
                    (b"x-model-version", response.version.encode()),
                    (b"x-model-variant", response.variant.encode()),
                ],
            )
        out = codec.encode_v1_response(response) if kind == "v1" else codec.encode_response(response)
        return (
            200,
            out,
            [
                (b"content-type", b"application/json"),
                (b"x-model-version", response.version.encode()),
                (b"x-model-variant", response.variant.encode()),
            ],
        )


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
        return Response(dataplane.metrics.exposition(), media_type=METRICS_CONTENT_TYPE)

    # Unknown routes and methods answer {"error": ...} like every other error.
    api.add_api_route("/", lambda: JSONBody({"name": "serving", "v2": "/v2"}), methods=["GET"])
    return InferenceApp(settings, dataplane, api)


def create_admin_app(settings: Settings, control: ModelControl) -> FastAPI:
    """The model control API alone, for ``SERVING_ADMIN_PORT``."""
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
    return api

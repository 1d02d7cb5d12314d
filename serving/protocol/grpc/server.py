"""gRPC adapter: the OIP v2 ``GRPCInferenceService`` over grpc.aio, plus health and reflection.

The servicer is thin: decode with ``codec``, call the dataplane (the same one REST calls), encode.
Errors go through ``_guard`` once: a ServingError becomes the gRPC code named in serving.errors
with its message as details; anything else is logged and becomes INTERNAL without a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from serving.admin import ModelControl
from serving.dataplane import DataPlane
from serving.errors import Forbidden, InvalidInput, ModelNotFound, ServingError
from serving.modelconfig import check_model_name, check_version_name
from serving.protocol.edge import GRPC, EdgeRecorder
from serving.protocol.grpc import codec
from serving.protocol.grpc.generated import oip_v2_pb2 as pb
from serving.protocol.grpc.stubs import SERVICE, Stubs, load
from serving.settings import Settings

if TYPE_CHECKING:
    from serving.observability.tracing import RequestTrace

log = logging.getLogger("serving.grpc")

Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def status_code(exc: ServingError) -> grpc.StatusCode:
    """The one mapping from the error table to grpc.StatusCode."""
    return getattr(grpc.StatusCode, exc.grpc_code, grpc.StatusCode.INTERNAL)


def _parser(message: Any) -> Callable[[bytes], Any]:
    """``message.FromString`` with a malformed message as the client's fault (INVALID_ARGUMENT),
    where a failing grpc deserializer would answer UNKNOWN and log a traceback."""
    parse = message.FromString
    full_name = message.DESCRIPTOR.full_name

    def parsed(raw: bytes) -> Any:
        try:
            return parse(raw)
        except DecodeError as exc:
            raise InvalidInput(f"request is not a valid {full_name}: {exc}") from None

    return parsed


def _guard(method: Handler, message: Any, parse: bool = True) -> Handler:
    """The handler grpc calls with the raw request bytes: parse (unless ``method`` parses
    itself), run ``method``, map errors. One wrapper (not one per concern) keeps the per-call
    frames few."""
    parsed = _parser(message) if parse else None

    async def handler(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(parsed(raw) if parsed is not None else raw, context)
        except ServingError as exc:
            code, details = status_code(exc), exc.message
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unexpected error in gRPC %s", method.__name__)
            code, details = grpc.StatusCode.INTERNAL, "internal server error"
        await context.abort(code, details)

    handler.__name__ = method.__name__
    return handler


def _model(name: str, version: str) -> str | None:
    check_model_name(name)
    if version:
        check_version_name(version)
        return version
    return None


class InferenceServicer:
    """One method per RPC of inference.GRPCInferenceService (names match the proto)."""

    def __init__(
        self, settings: Settings, dataplane: DataPlane, stubs: Stubs, control: ModelControl | None = None
    ) -> None:
        self._settings = settings
        self._dataplane = dataplane
        self._control = control or ModelControl(settings, dataplane)
        self._pb = stubs
        self._max_elements = settings.max_tensor_elements
        self._model_names: set[str] = set()  # names that passed check_model_name (bounded)
        self._parse_infer = _parser(stubs.messages["ModelInferRequest"])
        self._edge = EdgeRecorder(GRPC, dataplane)
        self._tracing = dataplane.tracing

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return self._pb.ServerLiveResponse(live=self._dataplane.live())

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return self._pb.ServerReadyResponse(ready=self._dataplane.ready())

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        version = _model(request.name, request.version)
        try:
            ready = self._dataplane.model_ready(request.name, version)
        except ModelNotFound:
            ready = False  # "is it ready?" -> "no", as Triton answers and tritonclient expects
        return self._pb.ModelReadyResponse(ready=ready)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        meta = self._dataplane.server_metadata()
        return self._pb.ServerMetadataResponse(
            name=meta["name"], version=meta["version"], extensions=meta["extensions"]
        )

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        meta = self._dataplane.model_metadata(request.name, _model(request.name, request.version))
        tensor = self._pb.ModelMetadataResponse.TensorMetadata
        return self._pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[tensor(**t) for t in meta["inputs"]],
            outputs=[tensor(**t) for t in meta["outputs"]],
        )

    async def ModelInfer(self, raw: bytes, context: grpc.aio.ServicerContext) -> pb.ModelInferResponse:
        """Counted here once, whatever happens (serving.protocol.edge). Errors in the order a
        caller needs them: an unknown model or version (NOT_FOUND) before any tensor error."""
        start = time.perf_counter()
        name = ""
        request = None
        trace = None
        try:
            message = self._parse_infer(raw)
            if self._tracing is not None:
                trace = self._begin_trace(message.model_name, context)
            name, version = message.model_name, message.model_version or None
            if not self._dataplane.knows(name):
                check_model_name(name)  # a malformed name is INVALID_ARGUMENT, others NOT_FOUND
            if version is not None:
                check_version_name(version)
            self._dataplane.check_model(name, version)
            request = codec.decode_request(message, self._max_elements, self._model_names)
            request.edge = GRPC
            remaining = context.time_remaining()
            if remaining is not None:
                request.deadline = time.monotonic() + remaining
            sticky = self._dataplane.routing_header(name)
            for key, value in context.invocation_metadata() or ():
                if key == sticky:
                    request.routing_key = value if isinstance(value, str) else value.decode(errors="replace")
            if trace is not None:
                request.trace = trace
                trace.child("decode", trace.started)
            response = await self._dataplane.infer(request)
            if trace is None:
                answer = codec.encode_response(response, raw=bool(message.raw_input_contents))
            else:
                encoding = time.time_ns()
                answer = codec.encode_response(response, raw=bool(message.raw_input_contents))
                trace.child("encode", encoding)
        except BaseException as exc:
            self._edge.failure(name, request, exc, time.perf_counter() - start, trace)
            raise
        self._edge.success(request, response, time.perf_counter() - start)
        return answer

    def _begin_trace(self, model: str, context: grpc.aio.ServicerContext) -> RequestTrace | None:
        """The request's server span (tracing on), continuing the W3C trace context of the
        call's metadata. It starts after the message parsed (grpc hands over whole messages)."""
        assert self._tracing is not None
        from serving.observability.tracing import metadata_carrier

        attributes = {
            "rpc.system": "grpc",
            "rpc.service": SERVICE,
            "rpc.method": "ModelInfer",
        }
        carrier = metadata_carrier(context.invocation_metadata())
        return self._tracing.begin("grpc", model[:128], carrier, attributes)

    def _check_admin(self, context: grpc.aio.ServicerContext) -> None:
        """``authorization: Bearer <token>`` metadata, checked by the model control API
        (PERMISSION_DENIED when no token is configured, UNAUTHENTICATED when wrong). With
        ``SERVING_ADMIN_PORT`` model control answers only there: PERMISSION_DENIED here."""
        if self._settings.admin_port >= 0:
            raise Forbidden(f"model control is served on the admin port ({self._settings.admin_port}) only")
        sent = dict(context.invocation_metadata() or ()).get("authorization")
        self._control.authorize(
            sent if isinstance(sent, str) or sent is None else sent.decode(errors="replace")
        )

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        self._check_admin(context)
        await self._control.load(request.model_name)
        return self._pb.RepositoryModelLoadResponse(model_name=request.model_name, isLoaded=True)

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        self._check_admin(context)
        await self._control.unload(request.model_name)
        return self._pb.RepositoryModelUnloadResponse(model_name=request.model_name, isUnloaded=True)


class _Health(health.aio.HealthServicer):  # type: ignore[misc]
    """grpc.health.v1: SERVING while the dataplane is ready (started, not draining)."""

    def __init__(self, dataplane: DataPlane) -> None:
        super().__init__()
        self._dataplane = dataplane

    async def Check(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if request.service not in ("", SERVICE):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service '{request.service}'")
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self._dataplane.ready()
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        return health_pb2.HealthCheckResponse(status=status)


def build_handler(servicer: InferenceServicer, stubs: Stubs) -> grpc.GenericRpcHandler:
    handlers = {}
    for method in stubs.service.methods:
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            _guard(
                getattr(servicer, method.name),
                stubs.messages[method.input_type.name],
                parse=method.name != "ModelInfer",  # it parses itself, to count what fails
            ),
            response_serializer=stubs.messages[method.output_type.name].SerializeToString,
        )
    return grpc.method_handlers_generic_handler(stubs.service.full_name, handlers)


async def start_grpc_server(
    settings: Settings, dataplane: DataPlane, control: ModelControl | None = None
) -> grpc.aio.Server:
    """Start a grpc.aio server on settings.host:settings.grpc_port; the caller stops it.
    ``control`` (the model control API, shared with REST) serves the repository RPCs."""
    stubs = load()
    options = [
        # Several workers share the port (the kernel spreads connections); one worker must
        # not silently share it with a stray process.
        ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
        ("grpc.max_receive_message_length", settings.max_body_bytes),
        ("grpc.max_send_message_length", -1),
    ]
    server = grpc.aio.server(options=options)
    servicer = InferenceServicer(settings, dataplane, stubs, control)
    server.add_generic_rpc_handlers((build_handler(servicer, stubs),))
    health_pb2_grpc.add_HealthServicer_to_server(_Health(dataplane), server)
    reflection.enable_server_reflection(
        (SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server, pool=stubs.pool
    )
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    port = server.add_insecure_port(f"{host}:{settings.grpc_port}")
    await server.start()
    log.info("gRPC listening on %s:%d", host, port)
    return server

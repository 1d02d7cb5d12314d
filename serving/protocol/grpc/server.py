"""gRPC adapter: the OIP v2 ``GRPCInferenceService`` over grpc.aio, plus health and reflection.

The servicer is thin: decode with ``codec``, call the dataplane (the same one REST calls), encode.
Errors go through ``_guard`` once: a ServingError becomes the gRPC code named in serving.errors
with its message as details; anything else is logged and becomes INTERNAL without a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from serving.control.models import ModelControl
from serving.core.dataplane import DataPlane
from serving.errors import Forbidden, InvalidInput, ModelNotFound, PayloadTooLarge, ServingError
from serving.labels import as_serving_error
from serving.modelconfig import check_model_name, check_version_name
from serving.protocol import triton
from serving.protocol.edge import GRPC, EdgeRecorder
from serving.protocol.grpc import codec
from serving.protocol.grpc.generated import oip_v2_pb2 as pb
from serving.protocol.grpc.stubs import SERVICE, Stubs, load
from serving.settings import Settings

if TYPE_CHECKING:
    from serving.observability.tracing import RequestTrace

log = logging.getLogger("serving.grpc")

Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]

STREAM_WINDOW = 64
"""Requests of one ModelStreamInfer stream computing at once. The stream stops reading past
it, so HTTP/2 flow control pushes back on a client that sends faster than we answer."""


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


def _status(rpc: str, exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The status an RPC ends with: the error table's code and message, or INTERNAL without
    a traceback (the log has it)."""
    if isinstance(exc, ServingError):
        return status_code(exc), exc.message
    log.exception("unexpected error in gRPC %s", rpc)
    return grpc.StatusCode.INTERNAL, "internal server error"


def _guard(method: Handler, message: Any, parse: bool = True) -> Handler:
    """The handler grpc calls with the raw request bytes: parse (unless ``method`` parses
    itself), run ``method``, map errors. One wrapper (not one per concern) keeps the per-call
    frames few."""
    parsed = _parser(message) if parse else None

    async def handler(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(parsed(raw) if parsed is not None else raw, context)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await context.abort(*_status(method.__name__, exc))

    handler.__name__ = method.__name__
    return handler


StreamHandler = Callable[[AsyncIterator[bytes], grpc.aio.ServicerContext], Awaitable[None]]


def _guard_stream(method: StreamHandler) -> StreamHandler:
    """A stream's own failure (not one request's: those are answered in-stream) ends it with
    a status, never a traceback."""

    async def handler(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
        try:
            await method(requests, context)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await context.abort(*_status(method.__name__, exc))

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
        self._max_message = settings.max_body_bytes
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
            if len(raw) > self._max_message:  # the library lets it through: counted, then refused here
                raise PayloadTooLarge(
                    f"the request message is {len(raw)} bytes; this server takes at most "
                    f"{self._max_message} (SERVING_MAX_BODY_BYTES)"
                )
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

    async def ModelStreamInfer(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> None:
        """Bidirectional streaming inference (Triton's ``ModelStreamInfer``): each request is
        a ``ModelInfer`` call (counted, routed and timed the same way) whose answer, or error
        as ``error_message``, is written to the stream as it completes; a failed request does
        not close the stream. Up to ``STREAM_WINDOW`` requests compute concurrently, so
        answers may come out of order: clients match them by ``id``. The stream's deadline is
        every request's deadline; a cancelled or expired stream cancels what is in flight."""
        window = asyncio.Semaphore(STREAM_WINDOW)
        writing = asyncio.Lock()  # one write at a time on the stream
        inflight: set[asyncio.Task[None]] = set()

        async def answer(raw: bytes) -> None:
            try:
                try:
                    reply = self._pb.ModelStreamInferResponse(
                        infer_response=await self.ModelInfer(raw, context)
                    )
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # counted by ModelInfer; reported in-stream
                    if not isinstance(exc, ServingError):
                        log.exception("unexpected error in gRPC ModelStreamInfer")
                    reply = self._stream_error(raw, exc)
                async with writing:
                    try:
                        await context.write(reply)
                    except Exception:  # the stream broke (client gone): nothing left to answer
                        log.debug("ModelStreamInfer: could not write an answer", exc_info=True)
            finally:
                window.release()

        try:
            async for raw in requests:
                await window.acquire()
                task = asyncio.create_task(answer(raw))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
            if inflight:  # the client half-closed: finish what it sent
                await asyncio.gather(*inflight)
        finally:
            for task in inflight:
                task.cancel()

    def _stream_error(self, raw: bytes, exc: Exception) -> pb.ModelStreamInferResponse:
        """An in-stream error: the error table's message (never a traceback), with the
        request's id and model when the request parsed, so any client can match it."""
        failed = as_serving_error(exc)
        reply = self._pb.ModelStreamInferResponse(error_message=failed.message)
        try:
            message = self._pb.ModelInferRequest.FromString(raw)
        except DecodeError:
            return reply
        reply.infer_response.id = message.id
        reply.infer_response.model_name = message.model_name[:256]
        reply.infer_response.model_version = message.model_version[:64]
        return reply

    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelConfigResponse:
        config = self._dataplane.model_config(request.name, _model(request.name, request.version))
        return json_format.ParseDict(
            {"config": triton.model_config(request.name, config)}, self._pb.ModelConfigResponse()
        )

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelStatisticsResponse:
        if request.name:
            stats = self._dataplane.statistics(request.name, _model(request.name, request.version))
        else:
            if request.version:
                raise InvalidInput("a statistics request with a version must name its model")
            stats = self._dataplane.statistics()
        return json_format.ParseDict({"model_stats": stats}, self._pb.ModelStatisticsResponse())

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
        if method.client_streaming:  # ModelStreamInfer: raw requests, parsed per request
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(
                _guard_stream(getattr(servicer, method.name)),
                response_serializer=stubs.messages[method.output_type.name].SerializeToString,
            )
            continue
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            _guard(
                getattr(servicer, method.name),
                stubs.messages[method.input_type.name],
                parse=method.name != "ModelInfer",  # it parses itself, to count what fails
            ),
            response_serializer=stubs.messages[method.output_type.name].SerializeToString,
        )
    return grpc.method_handlers_generic_handler(stubs.service.full_name, handlers)


def library_receive_limit(max_body_bytes: int) -> int:
    """grpc's own message limit: twice ours (at most 2 GiB - 1, grpc's int limit)."""
    return min(2 * max_body_bytes, 2**31 - 1)


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
        # Above our own limit, so an over-size request reaches ModelInfer, is counted and gets
        # our error; a message past the library's limit (twice ours) is refused by grpc itself,
        # uncounted, before any of our code runs.
        ("grpc.max_receive_message_length", library_receive_limit(settings.max_body_bytes)),
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

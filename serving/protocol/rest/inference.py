"""One REST inference request, whatever carries it: checks in the caller's order, decode,
dataplane, encode, counting.

Both REST paths share it: the raw-ASGI handler (serving.protocol.rest.app.InferenceApp) and
the protocol-level path (serving.protocol.rest.direct), so error bodies, their order and the
edge's counting are the same code on both. Errors come in the order a caller needs them: the
route's method (405), the names (400), an unknown model or version (404, before the body is
read), the content type (415), the declared length (413), then the body and its tensors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, NamedTuple

import orjson

from serving.core.dataplane import DataPlane
from serving.errors import InvalidInput, PayloadTooLarge, ServingError, UnsupportedMediaType
from serving.inference import InferenceRequest, InferenceResponse
from serving.modelconfig import check_model_name, check_version_name
from serving.protocol.edge import REST, EdgeRecorder
from serving.protocol.rest import binary, codec
from serving.protocol.rest.deadline import TIMEOUT_HEADER, deadline_from_header
from serving.settings import Settings

if TYPE_CHECKING:
    from serving.observability.tracing import RequestTrace

log = logging.getLogger("serving.rest")

Headers = list[tuple[bytes, bytes]]
Answer = tuple[int, bytes, Headers]
"""(status, body, headers without content-length)."""

_JSON_TYPES = (
    b"application/json",
    b"application/octet-stream",
    b"application/vnd.sagemaker-triton.binary+json",
)
_INTERNAL = b'{"error":"internal server error"}'


class MethodNotAllowed(InvalidInput):
    """A known route called with a method it does not serve (REST only)."""

    http_status = 405


class Target(NamedTuple):
    """An inference route: model, version (None: the router picks), ``v2`` or ``v1`` (with
    ``-explain`` for the explain routes)."""

    model: str
    version: str | None
    kind: str


def parse_infer_path(path: str) -> Target | None:
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
            return Target(parts[0], None, kind)
        if len(parts) == 3 and parts[1] == "versions":
            return Target(parts[0], parts[2], kind)
        return None
    if path.startswith("/v1/models/"):
        if path.endswith(":predict"):
            name, kind = path[11:-8], "v1"
        elif path.endswith(":explain"):
            name, kind = path[11:-8], "v1-explain"
        else:
            return None
        return Target(name, None, kind) if "/" not in name else None
    return None


def error_body(exc: ServingError) -> Answer:
    headers = [(b"content-type", b"application/json")]
    if exc.http_status == 405:
        headers.append((b"allow", b"POST"))  # the inference routes' one method
    elif exc.http_status == 503:
        headers.append((b"retry-after", b"1"))
    elif exc.http_status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="serving-admin"'))
    return exc.http_status, orjson.dumps({"error": exc.message}), headers


class RestInference:
    """The inference steps of one REST request for one dataplane (see the module docstring).

    A carrier calls ``check_head`` before it reads the body, ``check_size`` as the body
    grows, then ``serve`` with the whole body; or ``fail`` when its own step failed. Each
    request is counted exactly once by ``serve`` or ``fail`` (serving.protocol.edge)."""

    def __init__(self, settings: Settings, dataplane: DataPlane) -> None:
        self.dataplane = dataplane
        self.max_body = settings.max_body_bytes
        self._max_elements = settings.max_tensor_elements
        self.edge = EdgeRecorder(REST, dataplane)
        self.tracing = dataplane.tracing
        self._checked_names: set[Target] = set()  # targets whose names passed the checks

    def begin_trace(
        self, method: str, path: str, scheme: str, http_version: str, headers: Headers, target: Target
    ) -> RequestTrace | None:
        """The request's server span (tracing on), continuing the caller's W3C trace context."""
        assert self.tracing is not None
        from serving.observability.tracing import header_carrier

        route = "/v1/models/{model}:predict" if target.kind == "v1" else "/v2/models/{model}/infer"
        attributes = {
            "http.request.method": method,
            "http.route": route,
            "url.path": path,
            "url.scheme": scheme,
            "network.protocol.version": http_version,
        }
        return self.tracing.begin("rest", target.model, header_carrier(headers), attributes)

    def check_head(self, method: str, path: str, target: Target, headers: dict[bytes, bytes]) -> None:
        """Everything decided before the body: method, names, model and version, content
        type, declared length."""
        if method != "POST":
            raise MethodNotAllowed(f"{method} is not allowed on {path}; use POST")
        if target not in self._checked_names:  # a regex a request is 1 µs; names repeat
            check_model_name(target.model)
            if target.version is not None:
                check_version_name(target.version)
            if len(self._checked_names) < 4096:
                self._checked_names.add(target)
        self.dataplane.check_model(target.model, target.version)
        content_type = headers.get(b"content-type", b"application/json").split(b";", 1)[0].strip().lower()
        if content_type and content_type not in _JSON_TYPES and not content_type.endswith(b"+json"):
            raise UnsupportedMediaType(
                f"content type '{content_type.decode(errors='replace')}' is not supported; send application/json"
            )
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise PayloadTooLarge(f"request body of {int(length)} bytes exceeds the limit of {self.max_body}")

    def check_size(self, size: int) -> None:
        """The body read so far (a chunked body declares no length)."""
        if size > self.max_body:
            raise PayloadTooLarge(f"request body exceeds the limit of {self.max_body} bytes")

    def decode(
        self, body: bytes, headers: dict[bytes, bytes], target: Target, arrived: float
    ) -> InferenceRequest:
        model, version, kind = target
        if kind == "v1":
            input_name, datatype = self.dataplane.first_input(model)
            request = codec.decode_v1_request(body, model, input_name, datatype, self._max_elements)
        elif (json_length := headers.get(binary.HEADER)) is not None:
            length = binary.header_length(json_length, len(body))
            request = binary.decode_request(body, length, model, version, self._max_elements)
        else:
            request = codec.decode_request(body, model, version, self._max_elements)
        request.edge = REST
        key = headers.get(self.dataplane.routing_header(model).encode())
        if key is not None:
            request.routing_key = key.decode(errors="replace")
        timeout = headers.get(TIMEOUT_HEADER)
        if timeout is not None:
            request.deadline = deadline_from_header(timeout, arrived)
        return request

    async def serve(
        self,
        target: Target,
        headers: dict[bytes, bytes],
        body: bytes,
        arrived: float,
        start: float,
        trace: RequestTrace | None,
    ) -> Answer:
        """Decode, infer, encode and count; the answer to send (never raises, except
        CancelledError, which is counted first)."""
        request: InferenceRequest | None = None
        try:
            request = self.decode(body, headers, target, arrived)
            if trace is not None:
                request.trace = trace
                trace.child("decode", trace.started)
            response = await self.dataplane.infer(request)
            if trace is None:
                answer = encode(request, response, target.kind)
            else:
                encoding = time.time_ns()
                answer = encode(request, response, target.kind)
                trace.child("encode", encoding)
        except asyncio.CancelledError as exc:
            self.edge.failure(target.model, request, exc, time.perf_counter() - start, trace)
            raise
        except Exception as exc:
            return self.fail(target, request, exc, start, trace)
        self.edge.success(request, response, time.perf_counter() - start)
        return answer

    def fail(
        self,
        target: Target,
        request: InferenceRequest | None,
        exc: Exception,
        start: float,
        trace: RequestTrace | None,
    ) -> Answer:
        """Count a failed request and map its error to the answer."""
        if not isinstance(exc, ServingError):  # never a traceback to the client; the log has it
            log.exception("unexpected error serving %s", target.model, exc_info=exc)
        self.edge.failure(target.model, request, exc, time.perf_counter() - start, trace)
        if isinstance(exc, ServingError):
            return error_body(exc)
        return 500, _INTERNAL, [(b"content-type", b"application/json")]


def encode(request: InferenceRequest, response: InferenceResponse, kind: str) -> Answer:
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

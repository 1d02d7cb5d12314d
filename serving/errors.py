"""One error root for the whole server.

Each error class names its HTTP status and gRPC status code here, once; the REST and
gRPC adapters map every ``ServingError`` through this table and nothing else. The core
imports neither FastAPI nor grpc, so codes are the ``grpc.StatusCode`` member names.
"""

from __future__ import annotations

from pathlib import Path


class ServingError(Exception):
    """Root of every error the server reports to a client."""

    http_status: int = 500
    grpc_code: str = "INTERNAL"
    rejection: str | None = None
    """The ``reason`` of ``serving_rejections_total`` when the dataplane refuses a request with
    this error before compute (the dataplane records it, in one place); None: not a refusal."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ServingError):
    """The request is malformed or does not match the model's signature."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"
    rejection = "invalid"


class UnsupportedMediaType(InvalidInput):
    """The request's content type is not one the route reads (JSON, or the binary extension)."""

    http_status = 415


class PayloadTooLarge(InvalidInput):
    """The body is larger than ``SERVING_MAX_BODY_BYTES`` (gRPC: the message size limit)."""

    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class NotExplainable(ServingError):
    """The version cannot explain its predictions (not a tree booster, nor exported from one)."""

    http_status = 422
    grpc_code = "FAILED_PRECONDITION"


class ModelNotFound(ServingError):
    """No such model or version in the repository (reported before anything about the body)."""

    http_status = 404
    grpc_code = "NOT_FOUND"

    @classmethod
    def unknown(cls, name: str, version: str | None = None, detail: str = "") -> ModelNotFound:
        """An unknown model (or version) in the words Triton uses and its clients match on,
        ``Request for unknown model: 'x' is not found``, then what we know beyond it."""
        what = f"'{name[:128]}'" + (f" version '{version[:64]}'" if version is not None else "")
        return cls(f"Request for unknown model: {what} is not found" + (f" ({detail})" if detail else ""))


class ModelNotReady(ServingError):
    """The model (version) exists but cannot serve: loading, failed, or unloaded."""

    http_status = 503
    grpc_code = "UNAVAILABLE"


class Overloaded(ServingError):
    """A bounded queue is full; the client should retry later (REST adds Retry-After)."""

    http_status = 503
    grpc_code = "RESOURCE_EXHAUSTED"
    rejection = "overload"


class DeadlineExceeded(ServingError):
    """The request's deadline passed before compute started; it is never computed."""

    http_status = 504
    grpc_code = "DEADLINE_EXCEEDED"
    rejection = "deadline"


class Unauthorized(ServingError):
    """An admin endpoint was called without the bearer token, or with a wrong one."""

    http_status = 401
    grpc_code = "UNAUTHENTICATED"


class Forbidden(ServingError):
    """Refused whatever the token: no admin token configured, model control asked on a port
    other than ``SERVING_ADMIN_PORT``, a run-time change only one of several workers would see,
    or a read-only traffic-policy store."""

    http_status = 403
    grpc_code = "PERMISSION_DENIED"


class Conflict(ServingError):
    """The request repeats what was already done (ground truth for a request already labelled)."""

    http_status = 409
    grpc_code = "ALREADY_EXISTS"


class ModelLoadError(ServingError):
    """A model file or config is broken. Raised while loading, never to a predict caller.

    ``message`` is the full reason (absolute path, the library's own words) for the log and
    the admin view. ``public`` is a short cause class without paths or library text ("not a
    valid XGBoost model"), and ``path`` the file or folder it is about: the repository names
    that path relative to its root when it tells unauthenticated callers (serving/repository/store.py)."""

    http_status = 500
    grpc_code = "INTERNAL"

    def __init__(self, message: str, public: str | None = None, path: Path | None = None) -> None:
        super().__init__(message)
        self.public = public
        self.path = path


class RuntimeFault(ServingError):
    """The runtime raised while predicting: the server's fault, not the client's."""

    http_status = 500
    grpc_code = "INTERNAL"


class ClientClosedRequest(ServingError):
    """The client went away (disconnect, gRPC cancel or deadline on its side) before the
    answer. Never sent (nobody is listening): it names the outcome in metrics and access
    logs, as nginx's 499 does."""

    http_status = 499
    grpc_code = "CANCELLED"

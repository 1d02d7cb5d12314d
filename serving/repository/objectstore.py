"""One client for every object store the repository reads: obstore (docs/dependencies.md).

``ObjectStore`` lists a repository prefix and streams one object into a file, hashing it on
the way. Credentials and endpoints come only from each store's standard environment variables,
which obstore reads itself (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, ``AWS_REGION``…,
``GOOGLE_APPLICATION_CREDENTIALS``, ``AZURE_STORAGE_ACCOUNT_NAME``…). One exception, because
the operator already said so by naming it: an ``http://`` endpoint (an in-cluster MinIO, a
test server) is allowed without a second switch.

Retries: obstore retries a request that failed to connect, timed out, or got a 5xx or a
throttling answer (429/503 SlowDown) with its own jittered back-off, bounded here by
``repository_timeout_seconds``; ``download`` adds an outer loop with exponential back-off that
resumes a body cut in the middle from the byte where it stopped, pinned to the listed ETag
(``If-Match``), so a concurrent overwrite is never spliced into the file.

Errors never carry secrets: messages are the first line of obstore's (method, URL without a
query string, status), cut to 300 characters.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import PurePosixPath
from typing import Any, BinaryIO, TypeVar

log = logging.getLogger("serving.repository.objectstore")

SCHEMES = ("s3", "gs", "az", "abfs", "abfss", "https", "http")
_MD5 = re.compile(r"^[0-9a-f]{32}$")
_QUERY = re.compile(r"\?[^\s]*")
T = TypeVar("T")


class StoreError(Exception):
    """A listing or download failed after its retries; ``message`` is safe to log and show."""

    def __init__(self, message: str, transient: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient


class DigestMismatch(StoreError):
    """The bytes received do not match the checksum the store announced for them."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False)


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One listed object: ``key`` relative to the repository prefix, as the store names it."""

    key: str
    size: int
    etag: str
    """The store's entity tag without quotes ('' when the store gives none)."""
    modified: float
    version: str = ""

    @property
    def identity(self) -> str:
        """What changes whenever the object's bytes may have: ETag (or version, or time) and size."""
        return f"{self.etag or self.version or self.modified}:{self.size}"

    @property
    def md5(self) -> str | None:
        """The MD5 the ETag is, when it is one (S3 single-part uploads without SSE-KMS)."""
        return self.etag if _MD5.match(self.etag) else None


def safe_message(exc: BaseException) -> str:
    """The first line of an error, without query strings (presigned URLs, SAS tokens)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return _QUERY.sub("?…", text)[:300]


def is_remote(uri: str | None) -> bool:
    return bool(uri) and str(uri).split("://", 1)[0].lower() in SCHEMES


def safe_key(key: str) -> PurePosixPath | None:
    """``key`` as a relative path when every segment is a plain name, else None: no absolute
    keys, no ``.`` or ``..``, no empty segments, no backslashes, no control characters."""
    if not key or key.startswith("/") or "\\" in key or any(ord(c) < 32 for c in key):
        return None
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return None
    return PurePosixPath(*parts)


class ObjectStore:
    """A repository prefix in an object store."""

    def __init__(
        self, uri: str, timeout_seconds: float = 30.0, retries: int = 4, backoff: float = 0.5
    ) -> None:
        from obstore.store import from_url  # imported only for a remote repository

        self.uri = uri.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        scheme = self.uri.split("://", 1)[0].lower()
        client: dict[str, Any] = {
            "timeout": f"{max(1, int(timeout_seconds))}s",
            "connect_timeout": f"{max(1, min(10, int(timeout_seconds)))}s",
        }
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
        if scheme == "http" or (scheme == "s3" and endpoint.startswith("http://")):
            client["allow_http"] = True
        # obstore's own quick retries ride over a blip; the outer loop (_retrying) owns the
        # longer back-off, so a store that is down costs a bounded, predictable wait at start.
        retry = {
            "max_retries": min(retries, 2),
            "retry_timeout": timedelta(seconds=timeout_seconds),
            "backoff": {
                "init_backoff": timedelta(milliseconds=100),
                "max_backoff": timedelta(seconds=2),
                "base": 2.0,
            },
        }
        try:
            self._store = from_url(self.uri, client_options=client, retry_config=retry)  # type: ignore[call-overload]
        except Exception as exc:  # a malformed URI or an unknown scheme: a start-up error
            raise StoreError(f"{self.uri}: {safe_message(exc)}", transient=False) from None

    def list(self) -> list[ObjectInfo]:
        """Every object under the prefix (one paginated listing, retried with back-off)."""
        import obstore

        def once() -> list[ObjectInfo]:
            found: list[ObjectInfo] = []
            for batch in obstore.list(self._store, chunk_size=1000):
                for meta in batch:
                    modified = meta.get("last_modified")
                    found.append(
                        ObjectInfo(
                            key=str(meta["path"]),
                            size=int(meta["size"]),
                            etag=str(meta.get("e_tag") or "").strip('"'),
                            modified=modified.timestamp() if modified is not None else 0.0,
                            version=str(meta.get("version") or ""),
                        )
                    )
            return found

        return self._retrying(f"listing {self.uri}", once)

    def download(self, obj: ObjectInfo, out: BinaryIO, on_bytes: Callable[[int], None] | None = None) -> str:
        """Stream ``obj`` into ``out`` (opened for writing at offset 0) and return the sha256
        of its bytes. A cut body resumes with a range request pinned to the listed ETag; bytes
        that do not match the ETag's MD5 raise DigestMismatch (not retried: the store has them)."""
        import obstore

        sha = hashlib.sha256()
        md5 = hashlib.md5(usedforsecurity=False) if obj.md5 else None
        received = 0

        def once() -> None:
            nonlocal received
            options: dict[str, Any] = {}
            if obj.etag:
                options["if_match"] = f'"{obj.etag}"'
            if received:
                options["range"] = (received, obj.size)
            if obj.size == 0:
                options.pop("range", None)
            result = obstore.get(self._store, obj.key, options=options or None)  # type: ignore[arg-type]
            for chunk in result.stream(min_chunk_size=1 << 20):
                data = memoryview(chunk)
                out.write(data)
                sha.update(data)
                if md5 is not None:
                    md5.update(data)
                received += len(data)
                if on_bytes is not None:
                    on_bytes(len(data))
            if received != obj.size:
                raise StoreError(f"{obj.key}: body ended at {received} of {obj.size} bytes")

        self._retrying(f"downloading {obj.key}", once)
        if md5 is not None and md5.hexdigest() != obj.md5:
            raise DigestMismatch(
                f"{obj.key}: digest mismatch: the bytes received have MD5 {md5.hexdigest()}, "
                f"the store lists ETag {obj.md5}"
            )
        return sha.hexdigest()

    def _retrying(self, what: str, call: Callable[[], T]) -> T:
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                return call()
            except StoreError as exc:
                if not exc.transient or attempt == self.retries:
                    raise
                error: StoreError = exc
            except Exception as exc:
                error = _classify(what, exc)
                if not error.transient or attempt == self.retries:
                    raise error from None
            log.debug("%s failed (%s); retrying in %.1f s", what, error.message, delay)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")


def _classify(what: str, exc: Exception) -> StoreError:
    """Which failures are worth another try: not a missing object, a refused credential or a
    changed ETag (the listing is stale: the next poll sees the new object)."""
    name = type(exc).__name__
    permanent = isinstance(exc, FileNotFoundError | PermissionError | ValueError) or name in (
        "PermissionDeniedError",
        "UnauthenticatedError",
        "PreconditionError",
        "NotFoundError",
        "InvalidPathError",
        "UnknownConfigurationKeyError",
        "NotSupportedError",
    )
    return StoreError(f"{what}: {safe_message(exc)}", transient=not permanent)

"""A model repository in an object store, served from a verified local copy.

``RemoteRepository.sync`` lists the store, downloads into the content-addressed cache
(serving/repository/cache.py) what it does not hold yet, and assembles the repository's usual
layout in this process's *view*, a folder of hard links into the cache that ModelRepository
reads as its root, unchanged (confinement included: the view holds only files).

Units. Every key is a ``config.yaml`` (``<model>/config.yaml``, or ``config.yaml`` at the top
for one model's folder) or a file of a version folder (``<model>/<n>/…`` or ``<n>/…``). A
version folder is one unit: it is assembled complete in a staging folder and renamed into
place, so the server never sees half a version. Keys with ``..``, empty or ``.`` segments,
names the repository does not accept, or any other place are skipped (logged once).

Completeness rule (half-uploaded versions). Objects are atomic in every store, but a version
of several files (ONNX with external data) arrives one file at a time. While polling, a new or
changed unit is taken only once two consecutive listings agree on it (same keys, ETags and
sizes): it waits one poll. At start-up there is nothing to compare with, and the listing is
taken as it is (a version missing a file fails and is retried when its files change).

Unchanged means same key, ETag and size: such a unit is never downloaded or assembled again,
so the version it holds never reloads. A unit whose objects changed is reassembled and
reported in ``sync``'s result so the control layer reloads just that version (or, for a
config.yaml, that model's versions).

Outages. Each good listing is saved in the cache. When the store cannot be listed at start,
the saved listing is used: versions whose files are all cached serve (the index says so in
their reason, ``serving_repository_store_up`` is 0, a warning is logged), the others are
FAILED with the reason. When it fails while polling, everything stays as it is.

Faults. A failed download (after retries, serving/repository/objectstore.py) or bytes that
do not match the store's checksum fail that unit: a version not assembled before is FAILED
with the reason, one already assembled keeps its previous files and keeps serving. Each
failure is logged once per unit and object state, with the key, never credentials.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from serving.errors import InvalidInput, ModelLoadError
from serving.modelconfig import check_model_name, check_version_name
from serving.observability.metrics import Metrics
from serving.repository.cache import ContentCache, object_id, write_atomic
from serving.repository.objectstore import DigestMismatch, ObjectInfo, ObjectStore, StoreError, safe_key
from serving.settings import Settings

log = logging.getLogger("serving.repository.remote")

CONFIG = "config.yaml"
FETCH_THREADS = 8
UNREACHABLE_NOTE = "served from the model cache: the object store was unreachable at the last listing"


def default_cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / "serving-model-cache"


def unit_of(key: str) -> str | None:
    """The unit a key belongs to (see the module docstring), or None to skip it."""
    path = safe_key(key)
    if path is None:
        return None
    parts = path.parts
    try:
        if parts == (CONFIG,):
            return CONFIG
        if len(parts) == 2 and parts[1] == CONFIG:
            check_model_name(parts[0])
            return key
        if len(parts) >= 2 and parts[0].isdigit():
            return check_version_name(parts[0])
        if len(parts) >= 3 and parts[1].isdigit():
            check_model_name(parts[0])
            check_version_name(parts[1])
            return f"{parts[0]}/{parts[1]}"
    except InvalidInput:
        return None
    return None


@dataclass
class Unit:
    name: str
    objects: list[ObjectInfo] = field(default_factory=list)

    @property
    def signature(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((o.key, o.identity) for o in self.objects))

    @property
    def is_config(self) -> bool:
        return self.name == CONFIG or self.name.endswith("/" + CONFIG)

    def labels(self, single: str) -> tuple[str, str]:
        """(model, version) for metrics: a config.yaml counts under version ''."""
        if self.is_config:
            model = self.name.rsplit("/", 1)[0] if "/" in self.name else single
            return model, ""
        model, _, version = self.name.rpartition("/")
        return model or single, version


def group(listing: list[ObjectInfo]) -> dict[str, Unit]:
    units: dict[str, Unit] = {}
    for obj in listing:
        name = unit_of(obj.key)
        if name is not None:
            units.setdefault(name, Unit(name)).objects.append(obj)
    return units


class RemoteRepository:
    """Keeps this process's view of a remote repository in step with the store."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        assert settings.model_repo_uri is not None
        self.uri = settings.model_repo_uri.rstrip("/")
        self.metrics = metrics
        self.store = ObjectStore(
            self.uri,
            timeout_seconds=settings.repository_timeout_seconds,
            retries=settings.repository_retries,
            backoff=settings.repository_backoff_seconds,
        )
        root = settings.model_cache_dir or default_cache_dir()
        self.cache = ContentCache(root, settings.model_cache_max_bytes)
        repo_id = hashlib.sha256(self.uri.encode()).hexdigest()[:16]
        self._listing_file = root / "listings" / f"{repo_id}.json"
        self._listing_file.parent.mkdir(parents=True, exist_ok=True)
        views = root / "views" / repo_id
        views.mkdir(parents=True, exist_ok=True)
        _remove_stale_views(views)
        # One view per process: each assembles and swaps versions on its own poll schedule.
        # The last folder is named after the prefix, so one model's folder (KServe's layout)
        # is served under that name, as a local folder would be.
        own = views / f"{socket.gethostname()}-{os.getpid()}"
        own.mkdir(exist_ok=True)
        self._lock_fd = os.open(own / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)  # held while this process lives
        self.single = self.uri.split("://", 1)[1].rstrip("/").rsplit("/", 1)[-1] or "model"
        self.view = own / self.single
        self.view.mkdir(exist_ok=True)
        self.problems: dict[str, tuple[str, str]] = {}
        """Unit name -> why it is not assembled, in full and for unauthenticated callers."""
        self._rejected: dict[str, tuple[tuple[str, str], ...]] = {}
        """Units whose bytes failed their checksum: not fetched again until their objects change."""
        self.offline: str | None = None
        """Why the store could not be listed last time (None: it could)."""
        self._applied: dict[str, tuple[tuple[str, str], ...]] = {}
        self._seen: dict[str, tuple[tuple[str, str], ...]] = {}
        self._logged: set[tuple[str, str]] = set()

    # -- what the repository asks ----------------------------------------------------------
    def problem(self, relative: str) -> tuple[str, str] | None:
        """Why the version at ``relative`` (``model/n`` or ``n``) is not assembled, if it is
        not: (full reason, public reason)."""
        return self.problems.get(relative)

    def note(self, relative: str) -> str | None:
        """The index note for a version served from the cache while the store is unreachable."""
        return UNREACHABLE_NOTE if self.offline is not None and relative in self._applied else None

    # -- sync --------------------------------------------------------------------------------
    def sync(self, first: bool = False, take_all: bool = False) -> set[str]:
        """Bring the view in step with the store; returns the units whose files changed in the
        view (``model/n``, ``n``, ``model/config.yaml``, ``config.yaml``). ``first``: the
        start-up sync (takes every unit at once; with the store down, the saved listing).
        ``take_all``: a re-read on request, which takes new units without waiting a poll."""
        try:
            listing = self.store.list()
        except StoreError as exc:
            return self._unreachable(exc, first)
        if self.offline is not None:
            log.warning("object store %s is reachable again", self.uri)
        self.offline = None
        self._gauge("repository_store_up", 1)
        self._gauge("repository_last_listing", time.time())
        self._save_listing(listing)
        units = group(listing)
        for obj in listing:
            if unit_of(obj.key) is None:
                self._once(
                    obj.key, "skipped", f"{self.uri}/{obj.key}: skipped (not a file of the repository layout)"
                )
        changed: set[str] = set()
        due: list[Unit] = []
        for name, unit in sorted(units.items()):
            signature = unit.signature
            if self._applied.get(name) == signature and name not in self.problems:
                continue
            if self._rejected.get(name) == signature:
                continue
            settled = first or take_all or self._seen.get(name) == signature
            self._seen[name] = signature
            if not settled:
                log.info("%s/%s: new or changed; taken when the next listing agrees", self.uri, name)
                continue
            due.append(unit)
        # Units fetch in parallel: a store's latency per request, not its bandwidth, bounds a
        # repository of many small files. Each unit writes only its own view entry.
        with ThreadPoolExecutor(max_workers=FETCH_THREADS, thread_name_prefix="repo-fetch") as pool:
            for unit, ok in zip(due, pool.map(self._apply, due), strict=True):
                if ok:
                    changed.add(unit.name)
        for name in [n for n in self._applied if n not in units]:
            self._remove(name)
            changed.add(name)
        for name in [n for n in self.problems if n not in units]:
            self._remove(name)
        self._seen = {n: s for n, s in self._seen.items() if n in units}
        self._rejected = {n: s for n, s in self._rejected.items() if n in units}
        self._evict()
        return changed

    def _unreachable(self, exc: StoreError, first: bool) -> set[str]:
        if self.metrics is not None:
            self.metrics.repository_failures.labels("list").inc()
        self._gauge("repository_store_up", 0)
        was = self.offline
        self.offline = exc.message
        if not first:
            if was is None:
                log.warning("object store unreachable, serving what is loaded: %s", exc.message)
            return set()
        saved = self._load_listing()
        if saved is None:
            raise ModelLoadError(
                f"{exc.message}; the model cache ({self.cache.root}) holds no earlier listing of {self.uri} to start from"
            )
        log.warning("object store unreachable at start: serving from the model cache (%s)", exc.message)
        changed: set[str] = set()
        for name, unit in sorted(group(saved).items()):
            digests = [self.cache.lookup(self._oid(o)) for o in unit.objects]
            if all(d is not None for d in digests) and self._assemble(unit, [d for d in digests if d]):
                changed.add(name)
                self._count("model_cache_hits", len(digests))
                continue
            self._count("model_cache_misses", sum(d is None for d in digests))
            self._fail(
                unit,
                f"not in the model cache, and the object store is unreachable: {exc.message}",
                "not in the model cache, and the object store is unreachable",
            )
        return changed

    def _apply(self, unit: Unit) -> bool:
        """Fetch (or find) every object of a unit, verify it, assemble it; False on failure."""
        model, version = unit.labels(self.single)
        digests: list[str] = []
        for obj in unit.objects:
            oid = self._oid(obj)
            cached = self.cache.lookup(oid)
            if cached is not None and self.cache.verify(cached):
                self._count("model_cache_hits")
                digests.append(cached)
                continue
            start = time.perf_counter()
            fetched_bytes = 0

            def counted(n: int) -> None:
                nonlocal fetched_bytes
                fetched_bytes += n

            try:
                fetched = self.cache.fetch(oid, _downloader(self.store, obj, counted))
            except DigestMismatch as exc:
                self._rejected[unit.name] = unit.signature  # the store has these bytes: no retry
                self._failure(
                    "digest",
                    unit,
                    exc.message,
                    "digest mismatch: the bytes received do not match the store's checksum",
                )
                return False
            except StoreError as exc:
                self._failure("download", unit, exc.message, "download from the object store failed")
                return False
            except OSError as exc:
                reason = f"{obj.key}: cannot write the model cache: {exc.strerror or exc}"
                self._failure("download", unit, reason, "cannot write the model cache")
                return False
            finally:
                if self.metrics is not None and fetched_bytes:
                    self.metrics.repository_download_bytes.labels(model, version).inc(fetched_bytes)
                    self.metrics.repository_download_seconds.labels(model, version).inc(
                        time.perf_counter() - start
                    )
            # Found after waiting for another process's download of it: a hit too.
            self._count("model_cache_misses" if fetched.fresh else "model_cache_hits")
            digests.append(fetched.digest)
        return self._assemble(unit, digests)

    def _assemble(self, unit: Unit, digests: list[str]) -> bool:
        """Link a unit's blobs into a staging folder and rename it into the view in one step."""
        target = self.view / unit.name
        target.parent.mkdir(parents=True, exist_ok=True)
        # A config.yaml is linked beside its target and renamed over it; a version folder is
        # built whole in a staging folder and renamed into place.
        staging = (
            target.with_name(f".{CONFIG}.{os.getpid()}.{threading.get_ident()}")
            if unit.is_config
            else Path(tempfile.mkdtemp(dir=self.view.parent, prefix=".staging-"))
        )
        try:
            with self.cache.in_use():
                for obj, digest in zip(unit.objects, digests, strict=True):
                    if not self.cache.verify(digest):
                        reason = f"{obj.key}: the cached copy changed on disk; fetched again at the next poll"
                        self._failure("digest", unit, reason, "digest mismatch in the model cache")
                        self.cache.forget(self._oid(obj))
                        return False
                    if unit.is_config:
                        with contextlib.suppress(FileNotFoundError):
                            staging.unlink()
                        self.cache.link(digest, staging)
                        continue
                    dest = staging / Path(obj.key).relative_to(unit.name)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    self.cache.link(digest, dest)
            if unit.is_config:
                os.replace(staging, target)
            else:
                _swap_in(staging, target)
        finally:
            if unit.is_config:
                with contextlib.suppress(FileNotFoundError):
                    staging.unlink()
            elif staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        self._applied[unit.name] = unit.signature
        if self.problems.pop(unit.name, None) is not None:
            log.info("%s/%s: assembled after an earlier failure", self.uri, unit.name)
        return True

    def _fail(self, unit: Unit, reason: str, public: str) -> None:
        """Record why a unit is not served; a version never assembled gets an empty folder so
        the repository lists it and marks it FAILED with the reason."""
        self.problems[unit.name] = (reason, public)
        self._once(unit.name, reason, f"{self.uri}/{unit.name}: {reason}")
        if not unit.is_config and unit.name not in self._applied:
            (self.view / unit.name).mkdir(parents=True, exist_ok=True)

    def _failure(self, kind: str, unit: Unit, reason: str, public: str) -> None:
        if self.metrics is not None:
            self.metrics.repository_failures.labels(kind).inc()
        kept = " (the previous files keep serving)" if unit.name in self._applied else ""
        self._fail(unit, reason + kept, public + kept)

    def _remove(self, name: str) -> None:
        target = self.view / name
        if name.endswith(CONFIG):
            with contextlib.suppress(OSError):
                target.unlink()
        else:
            shutil.rmtree(target, ignore_errors=True)
        self._applied.pop(name, None)
        self.problems.pop(name, None)

    def _evict(self) -> None:
        evicted, size = self.cache.evict()
        if self.metrics is not None:
            self.metrics.model_cache_evictions.inc(evicted)
            self.metrics.model_cache_bytes.set(size)

    # -- helpers -----------------------------------------------------------------------------
    def _oid(self, obj: ObjectInfo) -> str:
        return object_id(self.uri, obj.key, obj.identity)

    def _once(self, key: str, state: str, message: str) -> None:
        if (key, state) not in self._logged:
            self._logged.add((key, state))
            log.error("%s", message)

    def _count(self, name: str, n: int = 1) -> None:
        if self.metrics is not None and n:
            getattr(self.metrics, name).inc(n)

    def _gauge(self, name: str, value: float) -> None:
        if self.metrics is not None:
            getattr(self.metrics, name).set(value)

    def _save_listing(self, listing: list[ObjectInfo]) -> None:
        rows = [[o.key, o.size, o.etag, o.modified, o.version] for o in listing]
        try:
            write_atomic(self._listing_file, json.dumps(rows).encode())
        except OSError as exc:
            log.warning("model cache: cannot save the listing (%s)", exc.strerror or exc)

    def _load_listing(self) -> list[ObjectInfo] | None:
        try:
            rows = json.loads(self._listing_file.read_text())
            return [ObjectInfo(str(k), int(s), str(e), float(m), str(v)) for k, s, e, m, v in rows]
        except (OSError, ValueError, TypeError):
            return None

    def close(self) -> None:
        """Remove this process's view (its links); the cache keeps the files."""
        shutil.rmtree(self.view.parent, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)


def _downloader(
    store: ObjectStore, obj: ObjectInfo, counted: Callable[[int], None]
) -> Callable[[BinaryIO], str]:
    def download(out: BinaryIO) -> str:
        return store.download(obj, out, counted)

    return download


def _swap_in(staging: Path, target: Path) -> None:
    """Put ``staging`` at ``target``: one rename when new; else rename the old one aside
    first (readers see the old version or the new one, or for an instant none, never a mix)."""
    if not target.exists():
        os.rename(staging, target)
        return
    old = target.with_name(f".old-{target.name}-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    os.rename(target, old)
    os.rename(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def _remove_stale_views(views: Path) -> None:
    """Delete views of processes that are gone (their lock is free), so their links stop
    pinning blobs against eviction."""
    for view in views.iterdir():
        lock = view / ".lock"
        if not lock.is_file():
            continue
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # alive
        finally:
            os.close(fd)
        shutil.rmtree(view, ignore_errors=True)

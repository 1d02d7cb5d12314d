"""The content-addressed model cache: files stored once by sha256, shared by processes and pods.

Layout under ``model_cache_dir``::

    blobs/sha256/<hex>     the bytes, read-only, named by their sha256
    index/<id>             <hex> of the object <id> = sha256(repository URI, key, ETag, size)
    locks/<id>.lock        flock held by the one process that downloads the object
    tmp/                   downloads in progress (renamed into blobs/ once verified)
    gc.lock                flock: shared while a process links blobs, exclusive while evicting
    listings/, views/      the last good listing and each process's assembled repository (remote.py)

Why these choices:

- **Downloaded once.** A process that finds no index entry takes the object's lock, looks
  again (another process may have just finished it), and only then downloads. A crash leaves a
  file in tmp/ and no index entry: the next process downloads again.
- **Verified.** The sha256 is computed while the bytes stream in; a blob is hashed again before
  a version that uses it is assembled (once per process), so a file changed on disk is caught
  and fetched again instead of loaded.
- **In use = linked.** A version folder links (hard links) its blobs, so a blob's link count
  above one means some process's assembled version uses it. Eviction removes least recently
  used blobs (by mtime, touched at each use) whose link count is one, and never the others: a
  loaded version's files survive any size bound, in every process sharing the cache.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger("serving.repository.cache")

_CHUNK = 1 << 20


def object_id(uri: str, key: str, identity: str) -> str:
    """The cache's name for one version of one object of one repository."""
    return hashlib.sha256(f"{uri}\0{key}\0{identity}".encode()).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def flocked(path: Path, exclusive: bool = True) -> Iterator[None]:
    """Hold an advisory lock on ``path`` (created if missing) for the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@dataclass
class Fetched:
    digest: str
    downloaded: int
    """Bytes this process downloaded for it (0: found in the cache)."""
    fresh: bool = False
    """Downloaded by this call (False: found, perhaps after waiting for another process)."""


class ContentCache:
    def __init__(self, root: Path, max_bytes: int = 0) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.blobs = root / "blobs" / "sha256"
        self.index = root / "index"
        self.locks = root / "locks"
        self.tmp = root / "tmp"
        for folder in (self.blobs, self.index, self.locks, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)
        self._verified: set[str] = set()

    def blob(self, digest: str) -> Path:
        return self.blobs / digest

    def lookup(self, oid: str) -> str | None:
        """The digest of a cached object, or None when it must be downloaded."""
        try:
            digest = (self.index / oid).read_text().strip()
        except OSError:
            return None
        return digest if len(digest) == 64 and self.blob(digest).is_file() else None

    def fetch(self, oid: str, download: Callable[[BinaryIO], str]) -> Fetched:
        """The object's digest, downloading it with ``download(file) -> sha256`` only when no
        process has it cached; concurrent callers for one object wait for the first."""
        found = self.lookup(oid)
        if found is not None:
            return Fetched(found, 0)
        with flocked(self.locks / f"{oid}.lock"):
            found = self.lookup(oid)
            if found is not None:
                return Fetched(found, 0)
            fd, name = tempfile.mkstemp(dir=self.tmp, prefix=f"{oid[:16]}-")
            tmp = Path(name)
            try:
                # No fsync: a blob torn by a crash fails its hash in the next process that
                # uses it (verify) and is fetched again; syncing every file would cost more.
                with os.fdopen(fd, "wb") as out:
                    digest = download(out)
                size = tmp.stat().st_size
                os.chmod(tmp, 0o444)
                target = self.blob(digest)
                if target.is_file():
                    tmp.unlink()  # the same bytes under another key or ETag: stored once
                else:
                    os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise
            write_atomic(self.index / oid, digest.encode())
            self._verified.add(digest)
            return Fetched(digest, size, fresh=True)

    def verify(self, digest: str) -> bool:
        """Hash a blob again (once per process); a blob whose bytes changed is removed, so the
        next fetch downloads it afresh."""
        if digest in self._verified:
            return True
        path = self.blob(digest)
        try:
            ok = file_sha256(path) == digest
        except OSError:
            return False
        if not ok:
            log.error("model cache: %s does not match its digest; removed, it will be downloaded again", path)
            with contextlib.suppress(OSError):
                path.unlink()
            return False
        self._verified.add(digest)
        return True

    def forget(self, oid: str) -> None:
        with contextlib.suppress(OSError):
            (self.index / oid).unlink()

    def link(self, digest: str, dest: Path) -> None:
        """Place a blob at ``dest`` (a hard link; a copy when the cache spans file systems) and
        mark it recently used."""
        src = self.blob(digest)
        try:
            os.link(src, dest)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            shutil.copyfile(src, dest)
        with contextlib.suppress(OSError):
            os.utime(src)

    @contextlib.contextmanager
    def in_use(self) -> Iterator[None]:
        """Hold while linking blobs into versions: eviction waits (cross-process)."""
        with flocked(self.root / "gc.lock", exclusive=False):
            yield

    def size(self) -> int:
        total = 0
        for entry in os.scandir(self.blobs):
            with contextlib.suppress(OSError):
                total += entry.stat().st_size
        return total

    def evict(self) -> tuple[int, int]:
        """Remove least recently used blobs no assembled version links until the cache fits
        ``max_bytes``; returns (blobs evicted, cache bytes after)."""
        if self.max_bytes <= 0:
            return 0, self.size()
        with flocked(self.root / "gc.lock", exclusive=True):
            entries = []
            total = 0
            for entry in os.scandir(self.blobs):
                try:
                    st = entry.stat()
                except OSError:
                    continue
                total += st.st_size
                entries.append((st.st_mtime_ns, st.st_nlink, st.st_size, entry.path))
            evicted = 0
            for _, links, size, path in sorted(entries):
                if total <= self.max_bytes:
                    break
                if links > 1:
                    continue  # linked by an assembled version (of some process): in use
                with contextlib.suppress(OSError):
                    os.unlink(path)
                    total -= size
                    evicted += 1
                    self._verified.discard(os.path.basename(path))
            if total > self.max_bytes:
                log.warning(
                    "model cache holds %d bytes, over its bound of %d: the rest is in use by loaded versions",
                    total,
                    self.max_bytes,
                )
            return evicted, total

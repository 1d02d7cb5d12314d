"""The traffic-policy store: one policy per model that every process of a deployment follows.

The store is a directory with one file per model, ``<model>.yaml`` (JSON is YAML too)::

    generation: 7                 # bumped by every write; each process reports the one it applies
    traffic:                      # a TrafficConfig (serving/modelconfig.py); null = config.yaml's
      weights: {"1": 90, "2": 10}
      stable_version: "1"
    changed_by: rollout           # optional, free text: who wrote it
    changed_at: "2026-11-29T16:00:00Z"

On one host it is a plain directory that every server process and ``--workers N`` worker
reads; the admin ``PUT/DELETE /v2/models/{m}/traffic`` and the rollout CLI write it
(temp file + rename, under a lock file, so a reader never sees half a file and two writers
never hand out the same generation). In Kubernetes it is a ConfigMap mounted as a directory
(never with ``subPath``: the kubelet updates a mounted ConfigMap by swapping a ``..data``
link, which ``subPath`` mounts never see); the rollout CLI patches the ConfigMap and the
mount is read-only to the server.

This module is the format and its file I/O only (the rollout CLI writes the store with it);
serving/control/syncer.py is what each server process runs to follow it.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from serving.modelconfig import TrafficConfig

log = logging.getLogger("serving.control.policy")

SUFFIX = ".yaml"
_ENTRY_KEYS = {"generation", "traffic", "changed_by", "changed_at"}

Signature = tuple[int, int, int, int]


class StoreError(Exception):
    """The store cannot be read or written (missing directory, read-only mount, bad file)."""


@dataclass(frozen=True)
class StoredPolicy:
    """One model's entry in the store."""

    generation: int
    traffic: dict[str, Any] | None
    """The raw traffic policy; None means the model's config.yaml policy."""
    changed_by: str = ""
    changed_at: str = ""


def policy_file(directory: Path, model: str) -> Path:
    return directory / f"{model}{SUFFIX}"


def policy_key(model: str) -> str:
    """The ConfigMap data key (= file name in the mounted directory) of a model's policy."""
    return f"{model}{SUFFIX}"


def traffic_problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors()
    )


def parse_entry(text: str) -> StoredPolicy:
    """Parse one model's file; raises StoreError naming what is wrong. The traffic section
    is checked against the schema here; versions are checked where they are applied."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # The reason is shown by the public GET /v2/models/{m}/traffic: the position, not the
        # parser's text, which quotes the file (docs/security.md).
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise StoreError(f"not valid YAML/JSON{where}") from None
    if doc is None:
        # Most likely a writer caught mid-way (truncated, not yet written): refuse, so the
        # policy in effect stays; writers should write a temp file and rename it.
        raise StoreError("empty file (write the policy to a temporary file and rename it)")
    if not isinstance(doc, dict):
        raise StoreError("expected a mapping with 'generation' and 'traffic'")
    unknown = sorted(str(k) for k in doc if k not in _ENTRY_KEYS)
    if unknown:
        raise StoreError(f"unknown keys {unknown} (allowed: {sorted(_ENTRY_KEYS)})")
    generation = doc.get("generation")
    if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
        raise StoreError(f"'generation' must be an integer >= 0, not {generation!r}")
    traffic = doc.get("traffic")
    if traffic is not None:
        if not isinstance(traffic, dict):
            raise StoreError("'traffic' must be a mapping (or null for config.yaml's policy)")
        try:
            traffic = TrafficConfig.model_validate(traffic).model_dump(mode="json")
        except ValidationError as exc:
            raise StoreError(f"invalid traffic policy: {traffic_problems(exc)}") from None
    return StoredPolicy(
        generation, traffic, str(doc.get("changed_by") or ""), str(doc.get("changed_at") or "")
    )


def render_entry(entry: StoredPolicy) -> str:
    """The file text of an entry (JSON, which every YAML reader reads too)."""
    import json

    doc: dict[str, Any] = {"generation": entry.generation, "traffic": entry.traffic}
    if entry.changed_by:
        doc["changed_by"] = entry.changed_by
    if entry.changed_at:
        doc["changed_at"] = entry.changed_at
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def file_signature(path: Path) -> Signature | None:
    try:
        st = path.stat()  # follows the ConfigMap's ..data links to the current file
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def read_entry(path: Path) -> tuple[Signature | None, StoredPolicy | None]:
    """(signature, entry) of one file; (None, None) when it does not exist."""
    before = file_signature(path)
    if before is None:
        return None, None
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(
            f"cannot read {path.name}: {getattr(exc, 'strerror', None) or type(exc).__name__}"
        ) from None
    return before, parse_entry(text)


@contextlib.contextmanager
def _locked(directory: Path, model: str) -> Iterator[None]:
    lock_path = directory / f".{model}.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_entry(directory: Path, model: str, traffic: dict[str, Any] | None, changed_by: str) -> StoredPolicy:
    """Write a model's policy with the next generation: atomically (temp file in the same
    directory, fsync, rename) and under a lock file, so concurrent writers (workers, the
    CLI) get distinct generations. Raises StoreError when the store is not writable."""
    path = policy_file(directory, model)
    try:
        with _locked(directory, model):
            try:
                _, current = read_entry(path)
            except StoreError:
                current = None  # a broken file is replaced by a good one
            entry = StoredPolicy(
                (current.generation if current is not None else 0) + 1, traffic, changed_by, now_iso()
            )
            fd, tmp = tempfile.mkstemp(prefix=f".{model}.", suffix=".tmp", dir=directory)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(render_entry(entry))
                    handle.flush()
                    os.fsync(handle.fileno())
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            with contextlib.suppress(OSError):
                dir_fd = os.open(directory, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
            return entry
    except OSError as exc:
        raise StoreError(
            f"cannot write the traffic policy store {directory}: {exc.strerror or exc} "
            "(a mounted ConfigMap is read-only: change it with `serving rollout` or by editing the ConfigMap)"
        ) from None

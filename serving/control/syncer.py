"""What each server process runs to follow the traffic-policy store (serving/control/policy.py).

Each process polls the files of the models it serves (one ``stat`` per model per
``traffic_policy_poll_seconds``, off the request path) and re-reads a file whose inode,
size or mtime changed. A policy that fails validation (syntax, schema, or a version this
process has not loaded) is refused: the previous one stays, and the reason goes to the log,
to ``serving_traffic_policy_rejected`` and to ``GET /v2/models/{m}/traffic``. A refused
policy is retried on every poll, so one that names a version still loading takes effect
once the version is READY.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from serving.control.policy import (
    Signature,
    StoredPolicy,
    StoreError,
    file_signature,
    now_iso,
    policy_file,
    read_entry,
    traffic_problems,
    write_entry,
)
from serving.core.router import Router
from serving.errors import Forbidden, InvalidInput
from serving.modelconfig import TrafficConfig
from serving.observability.metrics import Metrics
from serving.repository.store import Model, ModelRepository

log = logging.getLogger("serving.control.syncer")


def check_traffic(model: Model, doc: Any) -> TrafficConfig:
    """Validate a policy for ``model`` as this process has it loaded: the schema, and every
    version it names must be one of the model's versions. Raises InvalidInput."""
    if not isinstance(doc, dict):
        raise InvalidInput('the traffic policy is a JSON object, e.g. {"weights": {"1": 90, "2": 10}}')
    try:
        policy = TrafficConfig.model_validate(doc)
    except ValidationError as exc:
        raise InvalidInput(f"invalid traffic policy: {traffic_problems(exc)}") from None
    named = set(policy.weights)
    named.update(v for v in (policy.shadow_version, policy.stable_version) if v is not None)
    unknown = sorted(named - set(model.versions), key=int)
    if unknown:
        raise InvalidInput(
            f"model '{model.name}' has no loaded version {', '.join(unknown)} "
            f"(known: {', '.join(sorted(model.versions, key=int)) or 'none'}); load it first"
        )
    return policy


@dataclass
class _ModelPolicy:
    generation: int = 0
    source: str = "config"
    signature: Signature | None = None
    seen: bool = False
    store_generation: int | None = None
    rejected: tuple[int | None, str] | None = None
    pending: StoredPolicy | None = None
    """A refused entry, retried on each poll (it may name a version that is still loading)."""
    changed_by: str = ""
    changed_at: str = ""


@dataclass
class TrafficPolicies:
    """Which traffic policy each model follows in this process, where it came from, and
    which generation it is; the router applies it. Without a store directory, changes live
    in this process only (a single-process server); with one, they go through the store."""

    router: Router
    repository: ModelRepository
    metrics: Metrics
    directory: Path | None = None
    poll_seconds: float = 1.0
    _models: dict[str, _ModelPolicy] = field(default_factory=dict)

    def _state(self, name: str) -> _ModelPolicy:
        state = self._models.get(name)
        if state is None:
            state = self._models[name] = _ModelPolicy()
            self.metrics.traffic_generation.labels(name).set(0)
            self.metrics.traffic_rejected.labels(name).set(0)
        return state

    @property
    def writable_store(self) -> bool:
        return self.directory is not None

    # -- reading the store ----------------------------------------------------------------------
    def _scan(
        self, items: list[tuple[str, Signature | None, bool, StoredPolicy | None]]
    ) -> list[tuple[str, Signature | None, StoredPolicy | None, str]]:
        """Blocking part of a poll: stat each model's file, read the changed ones. ``items``
        is (model, last signature, read before, refused entry to retry)."""
        assert self.directory is not None
        found: list[tuple[str, Signature | None, StoredPolicy | None, str]] = []
        for name, last, seen, pending in items:
            path = policy_file(self.directory, name)
            signature = file_signature(path)
            if seen and signature == last:
                if pending is not None:
                    found.append((name, signature, pending, ""))
                continue
            try:
                signature, entry = read_entry(path)
            except StoreError as exc:
                found.append((name, signature, None, str(exc)))
                continue
            found.append((name, signature, entry, ""))
        return found

    def _items(self) -> list[tuple[str, Signature | None, bool, StoredPolicy | None]]:
        items = []
        for name in sorted(self.repository.models):
            state = self._state(name)
            items.append((name, state.signature, state.seen, state.pending))
        return items

    def _apply(self, name: str, signature: Signature | None, entry: StoredPolicy | None, error: str) -> None:
        state = self._state(name)
        state.signature, state.seen = signature, True
        model = self.repository.models.get(name)
        if model is None:
            return
        if error:
            self._reject(name, state, None, error)
            return
        if entry is None:  # no file: config.yaml's policy
            if state.source == "store" or state.generation != 0:
                log.info("model %s: no traffic policy in the store; back to config.yaml's", name)
            self.router.set_policy(name, None)
            state.generation, state.source, state.store_generation = 0, "config", None
            state.rejected = state.pending = None
            self._publish(name, state)
            return
        state.store_generation = entry.generation
        try:
            policy = None if entry.traffic is None else check_traffic(model, entry.traffic)
        except InvalidInput as exc:
            self._reject(name, state, entry.generation, exc.message, entry)
            return
        changed = state.generation != entry.generation or state.rejected is not None
        self.router.set_policy(name, policy)
        state.generation, state.source = entry.generation, "store" if policy is not None else "config"
        state.changed_by, state.changed_at = entry.changed_by, entry.changed_at
        state.rejected = state.pending = None
        self._publish(name, state)
        if changed:
            log.info(
                "model %s: traffic policy generation %d applied (%s)",
                name,
                entry.generation,
                policy.model_dump() if policy is not None else "config.yaml's",
            )

    def _reject(
        self,
        name: str,
        state: _ModelPolicy,
        generation: int | None,
        reason: str,
        entry: StoredPolicy | None = None,
    ) -> None:
        first = state.rejected != (generation, reason)
        state.rejected, state.pending = (generation, reason), entry
        self.metrics.traffic_rejected.labels(name).set(1)
        if first:
            log.warning(
                "model %s: traffic policy%s in %s refused, generation %d stays in effect: %s",
                name,
                f" generation {generation}" if generation is not None else "",
                self.directory,
                state.generation,
                reason,
            )

    def _publish(self, name: str, state: _ModelPolicy) -> None:
        self.metrics.traffic_generation.labels(name).set(state.generation)
        self.metrics.traffic_rejected.labels(name).set(1 if state.rejected else 0)

    def sync_now(self) -> None:
        """Read and apply the store for every loaded model (blocking: at start-up, before the
        process turns ready)."""
        items = self._items()
        if self.directory is not None:
            for found in self._scan(items):
                self._apply(*found)

    async def sync(self) -> None:
        items = self._items()
        if self.directory is not None:
            for found in await asyncio.to_thread(self._scan, items):
                self._apply(*found)

    async def watch(self) -> None:
        """Poll the store until cancelled."""
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await self.sync()
            except Exception:  # a bad moment on disk must not stop the watcher
                log.exception("traffic policy poll failed")

    # -- changing it ----------------------------------------------------------------------------
    async def change(self, model: Model, doc: dict[str, Any] | None, changed_by: str) -> None:
        """Replace a model's policy (``None``: back to config.yaml's). Validated here first;
        with a store, written to it and applied in this process at once (the others follow
        within a poll); without one, applied in this process only."""
        policy = None if doc is None else check_traffic(model, doc)
        state = self._state(model.name)
        if self.directory is None:
            self.router.set_policy(model.name, policy)
            state.generation += 1
            state.source = "runtime" if policy is not None else "config"
            state.changed_by, state.changed_at = changed_by, now_iso()
            self._publish(model.name, state)
            return
        traffic = policy.model_dump(mode="json") if policy is not None else None
        directory = self.directory
        try:
            entry = await asyncio.to_thread(write_entry, directory, model.name, traffic, changed_by)
        except StoreError as exc:
            raise Forbidden(str(exc)) from None
        log.info(
            "model %s: wrote traffic policy generation %d to %s", model.name, entry.generation, directory
        )
        await self.sync()

    # -- reporting ------------------------------------------------------------------------------
    def status(self, name: str) -> dict[str, Any]:
        state = self._state(name)
        out: dict[str, Any] = {
            "generation": state.generation,
            "source": state.source,
            "changed_by": state.changed_by or None,
            "changed_at": state.changed_at or None,
            "pid": os.getpid(),
        }
        workers = self.metrics.worker_values("serving_traffic_policy_generation", name)
        if workers:
            out["workers"] = {pid: int(value) for pid, value in sorted(workers.items())}
        if self.directory is not None:
            out["store"] = {
                "file": str(policy_file(self.directory, name)),
                "generation": state.store_generation,
                "rejected": (
                    {"generation": state.rejected[0], "reason": state.rejected[1]} if state.rejected else None
                ),
            }
        return out

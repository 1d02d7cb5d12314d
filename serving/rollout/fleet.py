"""Fleet mode: every replica (or worker) of one model follows a stored traffic policy.

The CLI writes the policy with the next generation to a store (a directory on one host here, a
ConfigMap on Kubernetes in serving.rollout.configmap) and reads every replica's traffic answer
until all report that generation.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from serving.control.policy import StoredPolicy, StoreError, policy_file, read_entry, write_entry
from serving.modelconfig import TrafficConfig
from serving.rollout.servertarget import InPodTarget, PolicyStore, ReplicaView, traffic_path
from serving.rollout.state import RolloutError, TrafficState


class FileStore:
    """One host: the policy directory every server process reads, and the processes' URLs."""

    def __init__(self, directory: Path, servers: list[str], timeout: float = 5.0) -> None:
        if not directory.is_dir():
            raise RolloutError(f"policy directory {directory} does not exist")
        self.directory = directory
        self.servers = [s.rstrip("/") for s in servers]
        self.timeout = timeout
        self.where = f"policy dir {directory}"

    def read(self, model: str) -> StoredPolicy | None:
        try:
            return read_entry(policy_file(self.directory, model))[1]
        except StoreError as exc:
            raise RolloutError(f"{policy_file(self.directory, model)}: {exc}") from None

    def write(self, model: str, traffic: dict[str, Any] | None) -> int:
        try:
            return write_entry(self.directory, model, traffic, "serving rollout").generation
        except StoreError as exc:
            raise RolloutError(str(exc)) from None

    def replicas(self, model: str) -> list[ReplicaView]:
        views = []
        for server in self.servers:
            status, payload = InPodTarget(server, model, timeout=self.timeout).call_quietly(
                "GET", traffic_path(model)
            )
            if status == 200 and isinstance(payload, dict):
                views.append(ReplicaView(server, payload))
            else:
                views.append(ReplicaView(server, None, f"GET traffic: {status or ''} {payload}".strip()))
        return views


class FleetTarget(InPodTarget):
    """In-pod canary on a fleet: the policy goes to the store that every replica follows;
    each change waits until every ready replica (and each of its workers) reports the new
    generation, or fails naming the laggards."""

    def __init__(
        self, store: PolicyStore, model: str, converge_timeout: float = 180.0, poll: float = 0.25
    ) -> None:
        super().__init__("", model)
        self.store = store
        self.converge_timeout = converge_timeout
        self.poll = poll

    # -- reading -----------------------------------------------------------------------------
    def _views(self) -> list[ReplicaView]:
        views = self.store.replicas(self.model)
        if not views:
            raise RolloutError(f"{self.store.where}: no ready replica serves model '{self.model}'")
        return views

    def read(self) -> dict[str, Any]:
        entry = self.store.read(self.model)  # first: a missing store is the first thing to say
        views = self._views()
        docs = [v.doc for v in views if v.doc is not None]
        if not docs:
            raise RolloutError("no replica answered: " + "; ".join(f"{v.name}: {v.error}" for v in views))
        if entry is not None and entry.traffic is not None:
            policy = TrafficConfig.model_validate(entry.traffic).model_dump()
        else:  # no policy in the store: the replicas' config.yaml policy
            policy = docs[0].get("policy") or {}
        # A version counts as READY only where every replica has it READY.
        states: dict[str, str] = {}
        for doc in docs:
            for version, state in (doc.get("versions") or {}).items():
                if states.get(version, "READY") == "READY":
                    states[version] = state
        for version in list(states):
            if any(version not in (doc.get("versions") or {}) for doc in docs):
                states[version] = "MISSING"
        return {
            "policy": policy,
            "versions": states,
            "generation": entry.generation if entry is not None else 0,
            "views": views,
        }

    def versions(self) -> list[str]:
        return sorted(self.read()["versions"], key=int)

    def version_ready(self, version: str) -> bool:
        return bool(self.read()["versions"].get(version) == "READY")

    def state(self) -> TrafficState:
        payload = self.read()
        base = self._state_from(payload)
        generation = int(payload["generation"])
        replicas = tuple(s for v in payload["views"] for s in v.status())
        lagging = [r.name for r in replicas if r.generation != generation]
        notes = base.notes + (
            (
                f"{len(lagging)} of {len(replicas)} replicas not on generation {generation}: {', '.join(lagging)}",
            )
            if lagging
            else ()
        )
        return replace(
            base,
            mode="inpod-fleet",
            target=f"{self.store.where} model {self.model}",
            notes=notes,
            replicas=replicas,
            generation=generation,
        )

    # -- writing -----------------------------------------------------------------------------
    def _put(self, policy: dict[str, Any], weights: dict[str, float], stable: str) -> None:
        kept = {k: v for k, v in policy.items() if k in TrafficConfig.model_fields}
        try:
            body = TrafficConfig.model_validate({**kept, "weights": weights, "stable_version": stable})
        except ValueError as exc:
            raise RolloutError(f"invalid traffic policy: {exc}") from None
        generation = self.store.write(self.model, body.model_dump(mode="json"))
        self.wait_converged(generation)

    def wait_converged(self, generation: int) -> float:
        """Block until every ready replica applies ``generation`` (or a later one); returns
        the seconds it took. Raises RolloutError naming each laggard on time-out."""
        began = time.monotonic()
        while True:
            views = self._views()
            lagging = []
            for view in views:
                for status in view.status():
                    if status.generation is None or status.generation < generation:
                        lagging.append(
                            f"{status.name} (generation {status.generation}"
                            + (f"; {status.detail}" if status.detail else "")
                            + ")"
                        )
            if not lagging:
                return time.monotonic() - began
            if time.monotonic() - began > self.converge_timeout:
                raise RolloutError(
                    f"traffic policy generation {generation} not applied by {len(lagging)} replica(s) "
                    f"after {self.converge_timeout:g}s: {'; '.join(lagging)}"
                )
            time.sleep(self.poll)

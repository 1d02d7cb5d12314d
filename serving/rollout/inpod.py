"""In-pod rollouts: our server's traffic policy, through the model control API.

For clusters with neither Knative nor KServe >= 0.20 (or no Kubernetes at all): both versions
live in one model repository and the server's router splits requests by weight. The policy
is read with ``GET /v2/models/{m}/traffic`` and replaced with ``PUT`` (admin token). The
canary is every weighted version other than ``stable_version``; the server labels their
metrics ``variant="canary"``, so Prometheus tells the two sides apart.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from serving.control.policy import StoredPolicy, StoreError, policy_file, read_entry, write_entry
from serving.modelconfig import TrafficConfig
from serving.rollout.prometheus import inpod_sides
from serving.rollout.state import ReplicaStatus, Revision, RolloutError, TrafficState


class InPodTarget:
    def __init__(self, server: str, model: str, token: str | None = None, timeout: float = 10.0) -> None:
        self.server = server.rstrip("/")
        self.model = model
        self.token = token
        self.timeout = timeout
        self._path = f"/v2/models/{urllib.parse.quote(model, safe='')}"

    # -- HTTP ------------------------------------------------------------------------------
    def _call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.server + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = {"error": raw.decode(errors="replace")[:300]}
            return exc.code, payload
        except (urllib.error.URLError, OSError) as exc:
            raise RolloutError(f"server {self.server} not reachable: {exc}") from None

    def call_quietly(self, method: str, path: str) -> tuple[int, Any]:
        """``_call`` that reports an unreachable server as status 0 instead of raising."""
        try:
            return self._call(method, path)
        except RolloutError as exc:
            return 0, str(exc)

    def _ok(self, method: str, path: str, body: Any = None) -> Any:
        status, payload = self._call(method, path, body)
        if status >= 400:
            message = payload.get("error", payload) if isinstance(payload, dict) else payload
            hint = " (set --token or SERVING_ADMIN_TOKEN)" if status in (401, 403) else ""
            raise RolloutError(f"{method} {path}: {status} {message}{hint}")
        return payload

    # -- policy ----------------------------------------------------------------------------
    def read(self) -> dict[str, Any]:
        """``GET /v2/models/{m}/traffic``: ``{"policy": {...}, "effective": {...}, "versions": {...}}``."""
        payload = self._ok("GET", f"{self._path}/traffic")
        if not isinstance(payload, dict):
            raise RolloutError(f"unexpected traffic policy answer: {payload!r}")
        return payload

    def policy(self) -> dict[str, Any]:
        payload = self.read()
        policy = payload.get("policy", payload)
        if not isinstance(policy, dict):
            raise RolloutError(f"unexpected traffic policy answer: {payload!r}")
        return policy

    def versions(self) -> list[str]:
        meta = self._ok("GET", self._path)
        return sorted((str(v) for v in meta.get("versions", [])), key=int)

    def version_ready(self, version: str) -> bool:
        status, _ = self._call("GET", f"{self._path}/versions/{version}/ready")
        return status == 200

    def _put(self, policy: dict[str, Any], weights: dict[str, float], stable: str) -> None:
        # Send back only the policy's own fields (the answer may carry more, e.g. shares).
        kept = {k: v for k, v in policy.items() if k in TrafficConfig.model_fields}
        body = {**kept, "weights": weights, "stable_version": stable}
        self._ok("PUT", f"{self._path}/traffic", body)

    def _roles(self, policy: dict[str, Any]) -> tuple[str | None, list[str]]:
        """(stable version, canary versions) as the server's router labels them."""
        weights = {str(k): float(v) for k, v in (policy.get("weights") or {}).items()}
        stable = policy.get("stable_version")
        if stable is None:
            weighted = sorted((v for v, w in weights.items() if w > 0), key=int)
            stable = weighted[0] if weighted else None
        if stable is None:
            versions = self.versions()
            stable = versions[-1] if versions else None
        canaries = sorted((v for v in weights if v != stable), key=int)
        return (str(stable) if stable is not None else None), canaries

    def state(self) -> TrafficState:
        return self._state_from(self.read())

    def _state_from(self, payload: dict[str, Any]) -> TrafficState:
        policy = payload.get("policy", payload)
        weights = {str(k): float(v) for k, v in (policy.get("weights") or {}).items()}
        stable, canaries = self._roles(policy)
        states = payload.get("versions")
        total = sum(weights.values())

        def ready(version: str) -> bool:
            if isinstance(states, dict):
                return states.get(version) == "READY"
            return self.version_ready(version)

        def percent(version: str) -> int:
            if not weights:
                return 100 if version == stable else 0
            return round(100 * weights.get(version, 0.0) / total) if total > 0 else 0

        revisions: list[Revision] = []
        if stable is not None:
            revisions.append(Revision(stable, percent(stable), ready(stable), "stable"))
        for version in canaries:
            revisions.append(Revision(version, percent(version), ready(version), "canary"))
        notes = ("several canary versions; analysis pools them",) if len(canaries) > 1 else ()
        return TrafficState(
            "inpod", f"{self.server} model {self.model}", tuple(revisions), inpod_sides(self.model), notes
        )

    # -- actions ---------------------------------------------------------------------------
    def start(self, percent: int, storage_uri: str | None, canary_version: str | None) -> None:
        if not canary_version:
            raise RolloutError("in-pod start needs --canary-version (a version in the model repository)")
        policy = self.policy()
        stable, _ = self._roles(policy)
        if stable is None or stable == canary_version:
            others = [v for v in self.versions() if v != canary_version]
            if not others:
                raise RolloutError(f"model '{self.model}' has no version to keep as stable")
            stable = others[-1]
        if not self.version_ready(canary_version):
            raise RolloutError(f"model '{self.model}' version {canary_version} is not READY")
        self._put(policy, {stable: 100 - percent, canary_version: percent}, stable)

    def _pair(self) -> tuple[dict[str, Any], str, str]:
        policy = self.policy()
        stable, canaries = self._roles(policy)
        if stable is None or not canaries:
            raise RolloutError(f"model '{self.model}' has no canary (start one first)")
        return policy, stable, canaries[-1]

    def set_percent(self, percent: int) -> None:
        policy, stable, canary = self._pair()
        self._put(policy, {stable: 100 - percent, canary: percent}, stable)

    def promote(self) -> None:
        policy, _, canary = self._pair()
        self._put(policy, {canary: 100}, canary)

    def rollback(self) -> None:
        # The canary stays listed at 0 so `status` shows what was rolled back.
        policy, stable, canary = self._pair()
        self._put(policy, {stable: 100, canary: 0}, stable)


# -- fleet mode --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplicaView:
    """One replica's ``GET /v2/models/{m}/traffic`` answer, or why it could not be read."""

    name: str
    doc: dict[str, Any] | None
    error: str = ""

    def processes(self) -> list[tuple[str, int | None]]:
        """(name, generation) of each process behind this replica: its workers when it runs
        ``--workers N`` (each reports its own), else itself."""
        if self.doc is None:
            return [(self.name, None)]
        workers = self.doc.get("workers")
        if isinstance(workers, dict) and workers:
            return [(f"{self.name} pid {pid}", int(g)) for pid, g in sorted(workers.items())]
        return [(self.name, int(self.doc.get("generation", 0)))]

    def status(self) -> list[ReplicaStatus]:
        weights = {}
        detail = self.error
        if self.doc is not None:
            policy = self.doc.get("policy") or {}
            weights = {str(k): float(v) for k, v in (policy.get("weights") or {}).items()}
            rejected = (self.doc.get("store") or {}).get("rejected")
            if rejected:
                detail = f"refused generation {rejected.get('generation')}: {rejected.get('reason')}"
        return [ReplicaStatus(name, generation, weights, detail) for name, generation in self.processes()]


class PolicyStore(Protocol):
    """Where a fleet's traffic policy lives, and how its replicas are read."""

    @property
    def where(self) -> str: ...

    def read(self, model: str) -> StoredPolicy | None: ...

    def write(self, model: str, traffic: dict[str, Any] | None) -> int:
        """Store the policy with the next generation; returns that generation."""
        ...

    def replicas(self, model: str) -> list[ReplicaView]:
        """Every ready replica's traffic answer."""
        ...


def traffic_path(model: str) -> str:
    return f"/v2/models/{urllib.parse.quote(model, safe='')}/traffic"


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


def make_inpod_target(args: Any, token: str | None) -> InPodTarget:
    """The in-pod target the flags ask for: one server (``--server``), a host fleet
    (``--policy-dir`` and a ``--server`` per process), or an InferenceService's pods."""
    model = args.model or args.name
    servers: list[str] = args.server or []
    if args.policy_dir is not None:
        if not servers:
            raise RolloutError("--policy-dir needs a --server URL for every process that follows it")
        return FleetTarget(FileStore(args.policy_dir, servers), model, args.converge_timeout)
    if len(servers) > 1:
        raise RolloutError(
            "several --server URLs form a fleet: give the policy directory they share (--policy-dir)"
        )
    if servers:
        return InPodTarget(servers[0], model, token)
    from serving.rollout.configmap import ConfigMapStore
    from serving.rollout.kserve import load_api_client

    store = ConfigMapStore(load_api_client(args.context), args.name, args.namespace, args.pod_port)
    return FleetTarget(store, model, args.converge_timeout)

"""In-pod rollouts: our server's traffic policy, through the model control API.

For clusters with neither Knative nor KServe >= 0.20 (or no Kubernetes at all): both versions
live in one model repository and the server's router splits requests by weight. The policy
is read with ``GET /v2/models/{m}/traffic`` and replaced with ``PUT`` (admin token). The
canary is every weighted version other than ``stable_version``; the server labels their
metrics ``variant="canary"``, so Prometheus tells the two sides apart.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Protocol

from serving.control.policy import StoredPolicy
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

    def mirror(self, on: bool) -> tuple[str, str]:
        """Copy every routed request to the canary as shadow traffic (``on``: the server
        compares its answers with the ones callers get, serving_shadow_*), or stop copying.
        The weights are left as they are. Returns (stable, canary)."""
        policy, stable, canary = self._pair()
        weights = {str(k): float(v) for k, v in (policy.get("weights") or {}).items()}
        shadow = {"shadow_version": canary if on else None, "shadow_fraction": 1.0 if on else 0.0}
        self._put({**policy, **shadow}, weights, stable)
        return stable, canary

    def rollback(self) -> None:
        # The canary stays listed at 0 so `status` shows what was rolled back.
        policy, stable, canary = self._pair()
        self._put(policy, {stable: 100, canary: 0}, stable)


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

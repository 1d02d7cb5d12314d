"""Model control: load, unload, re-read the repository, read and change traffic policies.

Protocol-agnostic like the dataplane: the REST routes (serving/protocol/rest/admin.py) and
the gRPC repository RPCs call these methods, after ``authorize``.

Hot swap, the rules every operation follows:

- A version loads and runs its warmup requests on a worker thread while the others keep
  serving; it is visible as LOADING and gets traffic only once it is READY. Reloading a
  READY version (its config changed) builds the new one beside the old and swaps them in
  one step on the event loop.
- Unloading marks the version UNLOADING, so the router sends it nothing new, waits until its
  in-flight count is zero (at most ``unload_grace_seconds``), then closes its predict stage
  and runtime. It stays listed as UNAVAILABLE with the reason.
- Operations on one model run one at a time (a lock per model).
- ``rescan`` (``POST /v2/repository/reload``, or every ``repository_poll_seconds``) loads
  model and version folders that appeared since the last look, unloads versions whose folder
  disappeared and, once a newly selected version is READY, the versions the version policy
  no longer selects, and retries a FAILED version whose files or config changed since it
  failed. It never reloads what an operator unloaded (an explicit load does).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from typing import Any

from serving.control.syncer import TrafficPolicies
from serving.core.dataplane import DataPlane
from serving.core.router import shares, stable_of
from serving.errors import Forbidden, InvalidInput, ModelLoadError, ModelNotFound, ServingError, Unauthorized
from serving.modelconfig import ModelConfig, check_model_name, check_version_name
from serving.repository.store import Model, ModelVersion, VersionState, version_dirs
from serving.settings import Settings

log = logging.getLogger("serving.control.models")

DISABLED = (
    "admin endpoints are disabled: start the server with SERVING_ADMIN_TOKEN set "
    "(and send 'Authorization: Bearer <token>') to enable them"
)


class ModelControl:
    def __init__(
        self, settings: Settings, dataplane: DataPlane, policies: TrafficPolicies | None = None
    ) -> None:
        self._token = (settings.admin_token or "").encode()
        self._grace = settings.unload_grace_seconds
        self._workers = settings.workers
        self.dataplane = dataplane
        self.repository = dataplane.repository
        self.router = dataplane.router
        self.metrics = dataplane.metrics
        self.policies = policies or TrafficPolicies(
            self.router,
            self.repository,
            self.metrics,
            settings.traffic_policy_dir,
            settings.traffic_policy_poll_seconds,
        )
        self._locks: dict[str, asyncio.Lock] = {}
        self._pinned: set[tuple[str, str]] = set()
        """Versions loaded one by one on request: rescan leaves them alone."""
        self._changed: set[str] = set()
        """Remote units (``model/n``, ``model/config.yaml``) whose files the running rescan changed."""

    # -- auth -------------------------------------------------------------------------------
    def authorize(self, authorization: str | None) -> None:
        """Check an ``Authorization`` header value; raises Forbidden (403) when no token is
        configured, Unauthorized (401) when it is missing or wrong. Constant-time compare."""
        if not self._token:
            raise Forbidden(DISABLED)
        scheme, _, given = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise Unauthorized("admin endpoints need the header 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(given.strip().encode(), self._token):
            raise Unauthorized("invalid admin token")

    # -- read -------------------------------------------------------------------------------
    def index(self, ready_only: bool = False, detail: bool = False) -> list[dict[str, str]]:
        """The repository index; ``detail`` gives full reasons (admin only, see repository.py)."""
        rows = self.repository.index(detail)
        return [r for r in rows if r["state"] == "READY"] if ready_only else rows

    def _rows(self, name: str) -> list[dict[str, str]]:
        return [r for r in self.repository.index() if r["name"] == name]

    def _lock(self, name: str) -> asyncio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    def _state(self, entry: ModelVersion) -> None:
        self.metrics.set_model_state(entry.model, entry.version, entry.state.value)

    # -- load -------------------------------------------------------------------------------
    def _one_process(self, what: str) -> None:
        # Workers share the port and the kernel picks one per connection: a run-time change
        # would reach that worker only and leave the pod split-brained. Refuse it loudly.
        if self._workers > 1:
            raise Forbidden(
                f"{what} at run time is not available with {self._workers} worker processes (it would "
                "reach only the one that answers); change config.yaml or the model folders and set "
                "SERVING_REPOSITORY_POLL_SECONDS (traffic: set SERVING_TRAFFIC_POLICY_DIR), or run one "
                "worker per pod"
            )

    async def load(self, name: str, version: str | None = None) -> list[dict[str, str]]:
        """(Re)load a model's policy-selected versions, or one version; returns its index
        rows once every requested version is READY. Versions the policy no longer selects
        are unloaded after the new ones are READY. Raises ModelLoadError with the reasons."""
        self._one_process("loading models")
        return await self._load_model(name, version)

    async def _load_model(self, name: str, version: str | None = None) -> list[dict[str, str]]:
        check_model_name(name)
        if version is not None:
            check_version_name(version)
        async with self._lock(name):
            model_dir = self.repository.model_dir(name)
            if not model_dir.is_dir():
                raise ModelNotFound.unknown(name, detail=f"no folder in {self.repository.root}")
            config = await asyncio.to_thread(self.repository.read_config, model_dir)
            available, _ = await asyncio.to_thread(version_dirs, model_dir)
            if version is None:
                wanted = [str(v) for v in config.version_policy.select(available)]
                if not wanted:
                    raise ModelLoadError(f"{model_dir}: no version folders match the version policy")
            elif int(version) not in available:
                raise ModelNotFound.unknown(name, version, f"no version folder {model_dir / version}")
            else:
                wanted = [version]
                self._pinned.add((name, version))
            model = self.repository.models.get(name)
            if model is None:
                model = self.repository.models[name] = Model(name=name, path=model_dir)
            entries = [await self._load_version(model, config, v) for v in wanted]
            model.config, model.error = config, ""
            if version is None:
                self._pinned = {p for p in self._pinned if p[0] != name}
                await self._retire_unselected(model, wanted)
            failed = [e for e in entries if not e.ready]
            if failed:
                raise ModelLoadError(
                    "; ".join(
                        f"model '{name}' version {e.version} failed to load: {e.reason}" for e in failed
                    )
                )
            return self._rows(name)

    async def _load_version(
        self, model: Model, config: ModelConfig, version: str, force: bool = False
    ) -> ModelVersion:
        current = model.versions.get(version)
        if current is not None and current.ready and current.config == config and not force:
            return current  # unchanged and serving: nothing to do
        entry = ModelVersion(model.name, version, config, model.path / version)
        swap = current is not None and current.ready
        if not swap:
            model.versions[version] = entry  # visible as LOADING while it loads
        self._state(entry)
        loop = asyncio.get_running_loop()
        try:
            runtime, load_s, warmup_s = await loop.run_in_executor(None, self.repository.open_runtime, entry)
        except ModelLoadError as exc:
            entry.state, entry.reason = VersionState.FAILED, exc.message
            if swap:
                assert current is not None
                log.error("model %s version %s keeps serving its old load", model.name, version)
                self._state(current)
            else:
                self._state(entry)
            return entry
        self.repository.activate(entry, runtime, load_s, warmup_s)
        model.versions[version] = entry  # one step: the next request routes to the new load
        self._state(entry)
        self.metrics.model_load_duration.labels(model.name, version).set(entry.load_seconds)
        self.metrics.set_monitoring(model.name, version, entry.monitoring.split(":", 1)[0])
        if entry.predict_paths:
            self.metrics.set_predict_paths(
                model.name, version, {k: v.path for k, v in entry.predict_paths.items()}
            )
        if swap:
            assert current is not None
            await self._drain(current, "replaced by a new load")
        return entry

    async def _retire_unselected(self, model: Model, selected: list[str]) -> None:
        if not any(model.versions[v].ready for v in selected if v in model.versions):
            return  # never take the old versions away before a new one serves
        for entry in list(model.versions.values()):
            if (
                entry.version not in selected
                and (model.name, entry.version) not in self._pinned
                and entry.state in (VersionState.READY, VersionState.LOADING, VersionState.FAILED)
            ):
                await self._drain(entry, "not selected by the version policy")

    # -- unload -----------------------------------------------------------------------------
    async def unload(self, name: str, version: str | None = None) -> list[dict[str, str]]:
        """Stop routing to the model's versions (or one), wait for their in-flight requests,
        then release them. They stay listed as UNAVAILABLE."""
        self._one_process("unloading models")
        check_model_name(name)
        if version is not None:
            check_version_name(version)
        async with self._lock(name):
            model = self.repository.get(name)
            if version is not None:
                targets = [self.repository.version(name, version)]
                self._pinned.discard((name, version))
            else:
                targets = list(model.versions.values())
                self._pinned = {p for p in self._pinned if p[0] != name}
            await asyncio.gather(*(self._drain(e, "unloaded by request") for e in targets))
            return self._rows(name)

    async def _drain(self, entry: ModelVersion, reason: str) -> None:
        if entry.state is VersionState.UNAVAILABLE:
            return
        entry.state = VersionState.UNLOADING  # the router sends it nothing new from here on
        self._state(entry)
        start = time.monotonic()
        while entry.inflight > 0 and time.monotonic() - start < self._grace:
            await asyncio.sleep(0.005)
        if entry.inflight > 0:
            log.warning(
                "model %s version %s: closing with %d requests still in flight after %.0f s",
                entry.model,
                entry.version,
                entry.inflight,
                self._grace,
            )
        predictor, runtime = entry.predictor, entry.runtime
        entry.predictor = entry.runtime = None
        if predictor is not None:
            await predictor.close()
        if runtime is not None:
            runtime.close()
        entry.state, entry.reason = VersionState.UNAVAILABLE, reason
        self._state(entry)
        log.info(
            "model %s version %s unloaded (%s) after %.1f ms",
            entry.model,
            entry.version,
            reason,
            (time.monotonic() - start) * 1e3,
        )

    # -- repository re-read -----------------------------------------------------------------
    async def reload(self) -> dict[str, list[str]]:
        """``rescan`` on request (the poller calls ``rescan`` itself, in every worker)."""
        self._one_process("re-reading the repository on request")
        return await self.rescan(take_all=True)

    async def rescan(self, take_all: bool = False) -> dict[str, list[str]]:
        """Pick up model and version folders added or removed since the last look. A remote
        repository is synced first (serving/repository/remote.py): its versions whose files
        changed reload, and a changed config.yaml applies to the model's loaded versions;
        ``take_all`` takes new remote versions without waiting for a second listing."""
        changed: set[str] = set()
        if self.repository.remote is not None:
            changed = await asyncio.to_thread(self.repository.remote.sync, False, take_all)
        root = self.repository.root
        single = self.repository.single_model
        changes: dict[str, list[str]] = {"loaded": [], "unloaded": [], "failed": []}
        self._changed = changed
        if single is not None:
            names = [single]
        else:
            listing = await asyncio.to_thread(
                lambda: sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
            )
            names = []
            for name in listing:
                try:
                    names.append(check_model_name(name))
                except InvalidInput:
                    continue
        for name in names:
            if name not in self.repository.models:
                try:
                    await self._load_model(name)
                    changes["loaded"].append(name)
                except ServingError as exc:
                    changes["failed"].append(f"{name}: {exc.message}")
                continue
            await self._rescan_model(name, changes)
        for name in [n for n in self.repository.models if n not in names]:
            async with self._lock(name):
                model = self.repository.models[name]
                await asyncio.gather(
                    *(self._drain(e, "model folder removed") for e in model.versions.values())
                )
                del self.repository.models[name]
                changes["unloaded"].append(name)
        if any(changes.values()):
            log.info("repository re-read: %s", {k: v for k, v in changes.items() if v})
        return changes

    async def _rescan_model(self, name: str, changes: dict[str, list[str]]) -> None:
        async with self._lock(name):
            model = self.repository.models[name]
            model_dir = self.repository.model_dir(name)
            if not model_dir.is_dir():
                return
            try:
                config = await asyncio.to_thread(self.repository.read_config, model_dir)
            except ModelLoadError as exc:
                if model.config is not None:
                    log.warning("%s (the loaded config stays in effect)", exc.message)
                return
            available, _ = await asyncio.to_thread(version_dirs, model_dir)
            selected = [str(v) for v in config.version_policy.select(available)]
            on_disk = {str(v) for v in available}
            for entry in list(model.versions.values()):
                if entry.version not in on_disk:
                    await self._drain(entry, "version folder removed")
                    del model.versions[entry.version]
                    changes["unloaded"].append(f"{name}/{entry.version}")
            # Remote versions whose files changed, or every loaded one when config.yaml changed.
            touched = {
                v
                for v in selected
                if v in model.versions
                and model.versions[v].ready
                and (
                    self.repository.relative(model_dir / v) in self._changed
                    or self.repository.relative(model_dir / "config.yaml") in self._changed
                )
            }
            new = [
                v
                for v in selected
                if v not in model.versions or model.versions[v].retry_due(config) or v in touched
            ]
            if not new:
                return
            for version in new:
                entry = await self._load_version(model, config, version, force=version in touched)
                (changes["loaded"] if entry.ready else changes["failed"]).append(f"{name}/{version}")
            model.config, model.error = config, ""
            await self._retire_unselected(model, selected)

    async def poll(self, interval: float) -> None:
        """Re-read the repository every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.rescan()
            except Exception:  # a bad moment on disk must not stop polling
                log.exception("repository poll failed")

    # -- traffic ----------------------------------------------------------------------------
    def traffic(self, name: str) -> dict[str, Any]:
        """The model's traffic policy in this process, what it means now (shares over READY
        versions) and which generation of the store it is."""
        check_model_name(name)
        model = self.repository.get(name)
        policy = self.router.policy(model)
        ready = [v.version for v in model.ready_versions()]
        split = shares(policy.weights, ready)
        stable = stable_of(policy, ready)
        shadow = policy.shadow_version
        status = self.policies.status(name)
        return {
            "model": name,
            "source": status.pop("source"),
            "generation": status.pop("generation"),
            "policy": policy.model_dump(),
            "effective": {
                "shares": split,
                "stable": stable,
                "canary": sorted((v for v in split if v != stable), key=int),
                "shadow": shadow if shadow in ready and policy.shadow_fraction > 0 else None,
            },
            "versions": {v: model.versions[v].state.value for v in sorted(model.versions, key=int)},
            **status,
        }

    async def set_traffic(self, name: str, doc: Any) -> dict[str, Any]:
        """Replace the model's policy (validated); ``None`` goes back to config.yaml's. With
        a policy store it is written there, and every process follows."""
        if not self.policies.writable_store:
            self._one_process("changing the traffic policy")
        check_model_name(name)
        model = self.repository.get(name)
        if doc is not None and not isinstance(doc, dict):
            raise InvalidInput('the traffic policy is a JSON object, e.g. {"weights": {"1": 90, "2": 10}}')
        await self.policies.change(model, doc, "admin-api")
        if doc is None:
            log.info("model %s traffic policy reset to its config", name)
        else:
            log.info("model %s traffic policy set: %s", name, self.router.policy(model).model_dump())
        return self.traffic(name)

"""The model repository: reads ``model_repo/``, validates configs, loads and unloads versions.

Layout::

    model_repo/<model>/config.yaml
    model_repo/<model>/<version>/model.onnx | model.json | model.ubj

A broken model (bad config, missing or corrupt file, signature mismatch) never stops the
others: its versions are FAILED with the reason, visible in metadata, readiness and the
repository index.

Confinement: every file the server reads (config.yaml, the model file) and every version
folder must resolve, after following links, inside the resolved repository root; otherwise
the version (or model) is FAILED with "resolves outside the model repository". The root itself
may be a link (KServe's modelcar mounts /mnt/models through one), so it is resolved first.

Reasons come in two forms. ``reason`` / ``error`` is the full one (absolute path, the
library's own message) for the log and the admin view (``index(detail=True)``);
``public_reason`` / ``public_error`` names files relative to the repository and gives a short
cause class, for unauthenticated callers (index, metadata, 503 bodies): a parser's message can
quote the file it was pointed at, and absolute paths describe the server.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from serving.errors import InvalidInput, ModelLoadError, ModelNotFound
from serving.modelconfig import ModelConfig, check_model_name, check_version_name, load_config
from serving.observability.metrics import Metrics
from serving.observability.profile import PROFILE_FILE, Profile, ProfileError, read_profile
from serving.predict.predictor import Predictor, ThreadedPredictor
from serving.runtimes.base import Runtime, load_runtime, model_file
from serving.runtimes.fastpath import PathChoice
from serving.runtimes.warmup import GeneratedWarmupRefused, WarmupConfigError, run_warmup
from serving.settings import Settings

if TYPE_CHECKING:
    from serving.repository.remote import RemoteRepository

log = logging.getLogger("serving.repository.store")

OUTSIDE = "resolves outside the model repository"
_UNSHOWN = "failed to load (the server log and the admin index have the details)"


class VersionState(enum.StrEnum):
    LOADING = "LOADING"
    READY = "READY"
    FAILED = "FAILED"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(eq=False)
class ModelVersion:
    model: str
    version: str
    config: ModelConfig
    path: Path
    state: VersionState = VersionState.LOADING
    reason: str = ""
    """Why it is not READY, in full (paths, library messages): the log and the admin view."""
    redacted: tuple[str, str] | None = None
    """(the ``reason`` it was made for, that reason without internals); see ``public_reason``."""
    runtime: Runtime | None = None
    predictor: Predictor | None = None
    load_seconds: float = 0.0
    """Load plus warmup time."""
    warmup_seconds: float = 0.0
    inflight: int = 0
    files: tuple[tuple[str, int, int], ...] = ()
    """``version_files`` as the last load attempt saw them (a FAILED version retries when they change)."""
    predict_paths: dict[str, PathChoice] = field(default_factory=dict)
    """Which computation serves small and large batches, and why a faster one does not
    (runtimes with guarded fast paths; empty for the others)."""
    profile: Profile | None = None
    """The version's training reference profile (``profile.json``) when valid: monitored."""
    monitoring: str = "none"
    """``on``, ``none`` (no profile.json) or ``invalid: <reason>`` (the version serves, unmonitored)."""

    @property
    def ready(self) -> bool:
        return self.state is VersionState.READY

    def retry_due(self, config: ModelConfig) -> bool:
        """A FAILED version whose files or config changed since it failed: a repository
        re-read loads it again (a fixed file makes it READY without a restart)."""
        if self.state is not VersionState.FAILED:
            return False
        return config != self.config or version_files(self.path) != self.files

    @property
    def public_reason(self) -> str:
        """``reason`` for unauthenticated callers. A load failure's reason has a redacted form;
        the reasons set elsewhere ("unloaded by request") are plain words and shown as they are."""
        return _public(self.reason, self.redacted)


@dataclass(eq=False)
class Model:
    name: str
    path: Path
    config: ModelConfig | None = None
    error: str = ""
    """Why the model has no versions (its config.yaml is broken...), in full."""
    redacted_error: tuple[str, str] | None = None
    versions: dict[str, ModelVersion] = field(default_factory=dict)

    @property
    def public_error(self) -> str:
        """``error`` for unauthenticated callers (see ``ModelVersion.public_reason``)."""
        return _public(self.error, self.redacted_error)

    def ready_versions(self) -> list[ModelVersion]:
        return sorted((v for v in self.versions.values() if v.ready), key=lambda v: int(v.version))


PredictorFactory = Callable[[ModelVersion, Runtime], Predictor]


def version_files(path: Path) -> tuple[tuple[str, int, int], ...]:
    """(relative name, size, mtime in ns) of every file under a version folder."""
    try:
        found = [(f, f.stat()) for f in path.rglob("*") if f.is_file()]
    except OSError:
        return ()
    return tuple(sorted((str(f.relative_to(path)), st.st_size, st.st_mtime_ns) for f, st in found))


def _public(reason: str, redacted: tuple[str, str] | None) -> str:
    if redacted is not None and redacted[0] == reason:
        return redacted[1]
    return reason


def confine(path: Path, root: Path) -> None:
    """Refuse ``path`` unless it resolves (after following every link) inside ``root``, which
    the caller has resolved already. A missing path resolves to itself: its own error comes later."""
    real = path.resolve()
    if not real.is_relative_to(root):
        raise ModelLoadError(f"{path}: {OUTSIDE} (it resolves to {real}, not under {root})", OUTSIDE, path)


def version_dirs(model_dir: Path) -> tuple[list[int], list[str]]:
    """Numeric version folders, and the problems with any other entries."""
    versions: list[int] = []
    problems: list[str] = []
    for entry in sorted(model_dir.iterdir()):
        if entry.name == "config.yaml" or entry.name.startswith("."):
            continue
        if not entry.is_dir():
            continue
        try:
            versions.append(int(check_version_name(entry.name)))
        except InvalidInput as exc:
            problems.append(f"{entry}: {exc.message}")
    return versions, problems


class ModelRepository:
    def __init__(
        self,
        settings: Settings,
        executor: Executor,
        predictor_factory: PredictorFactory | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.root = settings.model_repo
        self.remote: RemoteRepository | None = None
        """Set for an object-store repository: ``root`` is then its assembled local view."""
        if settings.model_repo_uri is not None:
            from serving.repository.objectstore import StoreError
            from serving.repository.remote import RemoteRepository

            try:
                self.remote = RemoteRepository(settings, metrics)
            except StoreError as exc:
                raise ModelLoadError(exc.message) from None
            except OSError as exc:
                raise ModelLoadError(f"model cache: {exc.strerror or exc}: {exc.filename}") from None
            self.root = self.remote.view
        self._settings = settings
        self._executor = executor
        self._predictor_factory = predictor_factory or self._threaded
        self.models: dict[str, Model] = {}

    def _threaded(self, version: ModelVersion, runtime: Runtime) -> Predictor:
        return ThreadedPredictor(runtime, self._executor)

    def get(self, name: str) -> Model:
        model = self.models.get(name)
        if model is None:
            raise ModelNotFound.unknown(name, detail="not in the repository")
        return model

    def version(self, name: str, version: str) -> ModelVersion:
        model = self.get(name)
        found = model.versions.get(version)
        if found is None:
            raise ModelNotFound.unknown(name, version)
        return found

    @property
    def single_model(self) -> str | None:
        """The model name when the root is one model's folder (KServe's /mnt/models), else None."""
        if (self.root / "config.yaml").is_file():
            return self._settings.model_name or self.root.resolve().name
        return None

    def model_dir(self, name: str) -> Path:
        return self.root if name == self.single_model else self.root / name

    # -- confinement and public reasons ------------------------------------------------------
    def relative(self, path: Path) -> str:
        """``path`` named relative to the repository root, never as an absolute path."""
        for base in (self.root, self.root.resolve()):
            try:
                return path.relative_to(base).as_posix()
            except ValueError:
                continue
        return path.name

    def public(self, exc: ModelLoadError, where: Path) -> str:
        """The reason unauthenticated callers see: the file relative to the repository and the
        cause class, without the library's message or the absolute path."""
        name = self.relative(exc.path if exc.path is not None else where)
        return f"{name}: {exc.public or _UNSHOWN}" if name not in ("", ".") else exc.public or _UNSHOWN

    def read_config(self, model_dir: Path) -> ModelConfig:
        """``load_config`` for a model folder, after checking that the folder and its
        config.yaml resolve inside the repository."""
        root = self.root.resolve()
        confine(model_dir, root)
        confine(model_dir / "config.yaml", root)
        return load_config(model_dir / "config.yaml")

    def load_all(self, stop: threading.Event | None = None) -> None:
        """Discover every model folder and load the versions its policy selects; once
        ``stop`` is set (SIGTERM during start-up), load no more models."""
        if self.remote is not None:
            self.remote.sync(first=True)
        if not self.root.is_dir():
            raise ModelLoadError(f"model repository {self.root} is not a directory")
        wanted = self.single_model or self._settings.model_name
        if wanted is not None:
            if not self.model_dir(check_model_name(wanted)).is_dir():
                raise ModelLoadError(f"model '{wanted}' has no folder in {self.root}")
            self.load_model(wanted)
            return
        for model_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if stop is not None and stop.is_set():
                return
            self.load_model(model_dir.name)

    def load_model(self, name: str) -> Model:
        check_model_name(name)
        model_dir = self.model_dir(name)
        if not model_dir.is_dir():
            raise ModelNotFound.unknown(name, detail=f"no folder in {self.root}")
        model = Model(name=name, path=model_dir)
        self.models[name] = model
        try:
            model.config = self.read_config(model_dir)
        except ModelLoadError as exc:
            model.error = exc.message
            model.redacted_error = (exc.message, self.public(exc, model_dir / "config.yaml"))
            log.error("model %s unavailable: %s", name, exc.message)
            return model
        available, problems = version_dirs(model_dir)
        for problem in problems:
            log.warning("%s", problem)
        selected = model.config.version_policy.select(available)
        if not selected:
            model.error = f"{model_dir}: no version folders match the version policy"
            model.redacted_error = (model.error, f"{name}: no version folders match the version policy")
            log.error("model %s unavailable: %s", name, model.error)
        for number in selected:
            self._load_version(model, str(number))
        return model

    def _load_version(self, model: Model, version: str) -> ModelVersion:
        assert model.config is not None
        entry = ModelVersion(model.name, version, model.config, model.path / version)
        model.versions[version] = entry
        try:
            runtime, load_s, warmup_s = self.open_runtime(entry)
        except ModelLoadError as exc:
            entry.state, entry.reason = VersionState.FAILED, exc.message
            return entry
        self.activate(entry, runtime, load_s, warmup_s)
        return entry

    def open_runtime(self, entry: ModelVersion) -> tuple[Runtime, float, float]:
        """Load a version's runtime and run its warmup requests (serving/warmup); returns the
        runtime, load seconds and warmup seconds. Blocking and touches no shared state (only
        the new entry's ``redacted``), so the model control API runs it on a worker thread while
        the old versions keep serving. Raises ModelLoadError with the reason; the entry keeps
        that reason's public form, so whoever marks it FAILED with ``exc.message`` shows it."""
        try:
            return self._open_runtime(entry)
        except ModelLoadError as exc:
            entry.redacted = (exc.message, self.public(exc, entry.path))
            raise

    def unit(self, entry: ModelVersion) -> str:
        """The version folder relative to the root (``model/n``, or ``n`` for one model's folder)."""
        return self.relative(entry.path)

    def _open_runtime(self, entry: ModelVersion) -> tuple[Runtime, float, float]:
        start = time.perf_counter()
        entry.files = version_files(entry.path)
        problem = self.remote.problem(self.unit(entry)) if self.remote is not None else None
        if problem is not None:
            full, public = problem
            log.error("model %s version %s failed to load: %s", entry.model, entry.version, full)
            raise ModelLoadError(full, public, entry.path)
        try:
            root = self.root.resolve()
            confine(entry.path, root)
            confine(model_file(entry.config, entry.path), root)
            runtime = load_runtime(entry.config, entry.path, self._settings)
        except ModelLoadError as exc:
            log.error("model %s version %s failed to load: %s", entry.model, entry.version, exc.message)
            raise
        except Exception as exc:  # a runtime library fault must not take the server down
            log.exception("model %s version %s failed to load", entry.model, entry.version)
            raise ModelLoadError(f"{entry.path}: {type(exc).__name__}: {exc}", None, entry.path) from None
        loaded = time.perf_counter()
        try:
            run_warmup(runtime, entry.config)
        except GeneratedWarmupRefused as exc:
            log.warning(
                "model %s version %s: the model refused the warm-up inputs generated from its "
                "signature (%s); serving it without warm-up (set warmup.inputs to sample rows)",
                entry.model,
                entry.version,
                exc,
            )
        except Exception as exc:
            runtime.close()
            message = f"{entry.path}: warmup failed: {type(exc).__name__}: {exc}"
            log.error("model %s version %s %s", entry.model, entry.version, message)
            public = (
                f"warmup failed: {exc}"
                if isinstance(exc, WarmupConfigError)
                else "warmup failed: the model raised an error (the server log and the admin index have it)"
            )
            raise ModelLoadError(message, public, entry.path) from None
        return runtime, loaded - start, time.perf_counter() - loaded

    def activate(self, entry: ModelVersion, runtime: Runtime, load_s: float, warmup_s: float) -> None:
        """Give a loaded, warmed-up version its predict stage and mark it READY."""
        entry.runtime = runtime
        entry.predictor = self._predictor_factory(entry, runtime)
        paths = getattr(runtime, "predict_paths", None)
        entry.predict_paths = dict(paths) if isinstance(paths, dict) else {}
        entry.load_seconds = load_s + warmup_s
        entry.warmup_seconds = warmup_s
        entry.profile, entry.monitoring = load_version_profile(entry, self.root.resolve())
        entry.state = VersionState.READY
        log.info(
            "model %s version %s ready (%s, load %.1f ms, warmup %.1f ms)",
            entry.model,
            entry.version,
            entry.config.platform,
            load_s * 1e3,
            warmup_s * 1e3,
        )

    def index(self, detail: bool = False) -> list[dict[str, str]]:
        """Every model version and its state, with the reason when it is not READY: the public
        form, or with ``detail`` the full one (for the log and the authenticated admin view)."""
        rows: list[dict[str, str]] = []
        for model in sorted(self.models.values(), key=lambda m: m.name):
            if not model.versions:
                error = model.error if detail else model.public_error
                rows.append({"name": model.name, "state": "UNAVAILABLE", "reason": error})
            for entry in sorted(model.versions.values(), key=lambda v: int(v.version)):
                row = {"name": model.name, "version": entry.version, "state": entry.state.value}
                if entry.reason:
                    row["reason"] = entry.reason if detail else entry.public_reason
                elif self.remote is not None and entry.ready:
                    note = self.remote.note(self.unit(entry))
                    if note is not None:
                        row["reason"] = note
                if detail and entry.monitoring != "none":
                    row["monitoring"] = entry.monitoring
                rows.append(row)
        return rows

    def close(self) -> None:
        for model in self.models.values():
            for entry in model.versions.values():
                if entry.runtime is not None:
                    entry.runtime.close()
                    entry.runtime = None
                entry.state = VersionState.UNAVAILABLE
        if self.remote is not None:
            self.remote.close()


def expected_output_values(config: ModelConfig) -> set[str] | None:
    """The output value names a profile may describe (``name``, ``name[k]``), or None when an
    output's width is not fixed in config.yaml."""
    names: set[str] = set()
    for spec in config.outputs:
        if len(spec.shape) == 1 or (len(spec.shape) == 2 and spec.shape[1] == 1):
            names.add(spec.name)
        elif len(spec.shape) == 2 and spec.shape[1] > 0:
            names.update(f"{spec.name}[{k}]" for k in range(spec.shape[1]))
        else:
            return None
    return names


def load_version_profile(entry: ModelVersion, root: Path) -> tuple[Profile | None, str]:
    """The version's ``profile.json`` checked against its config: (profile, "on"), (None,
    "none") without one, or (None, "invalid: <reason>") with the reason logged. A bad profile
    never fails the version: it serves, unmonitored."""
    path = entry.path / PROFILE_FILE
    if not path.is_file():
        return None, "none"
    spec = entry.config.inputs[0]
    try:
        confine(path, root)
        if len(spec.shape) != 2 or spec.shape[1] < 1:
            raise ProfileError(
                f"monitoring needs a [-1, n_features] input; '{spec.name}' is {list(spec.shape)}"
            )
        profile = read_profile(path, spec.shape[1], spec.name, expected_output_values(entry.config))
    except (ProfileError, ModelLoadError) as exc:
        reason = exc.message if isinstance(exc, ModelLoadError) else str(exc)
        log.warning(
            "model %s version %s: %s refused, monitoring off for it: %s",
            entry.model,
            entry.version,
            PROFILE_FILE,
            reason,
        )
        return None, f"invalid: {PROFILE_FILE}: {reason}"
    return profile, "on"


def validate_repository(root: Path, settings: Settings | None = None) -> list[str]:
    """Every problem in a repository, as messages naming the file; empty when all is well."""
    settings = (settings or Settings()).model_copy(update={"model_repo": root})
    if not root.is_dir():
        return [f"{root}: not a directory"]
    problems: list[str] = []
    real_root = root.resolve()
    model_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if (root / "config.yaml").is_file():  # one model's folder (KServe's /mnt/models layout)
        model_dirs = [root.resolve()]
    if not model_dirs:
        problems.append(f"{root}: no model folders")
    for model_dir in model_dirs:
        try:
            check_model_name(model_dir.name)
        except InvalidInput as exc:
            problems.append(f"{model_dir}: {exc.message}")
            continue
        try:
            confine(model_dir, real_root)
            confine(model_dir / "config.yaml", real_root)
            config = load_config(model_dir / "config.yaml")
        except ModelLoadError as exc:
            problems.append(exc.message)
            continue
        available, dir_problems = version_dirs(model_dir)
        problems.extend(dir_problems)
        selected = config.version_policy.select(available)
        if not selected:
            problems.append(f"{model_dir}: no version folders match the version policy")
        for number in selected:
            try:
                confine(model_dir / str(number), real_root)
                confine(model_file(config, model_dir / str(number)), real_root)
                runtime = load_runtime(config, model_dir / str(number), settings)
            except ModelLoadError as exc:
                problems.append(exc.message)
            except Exception as exc:
                problems.append(f"{model_dir / str(number)}: {type(exc).__name__}: {exc}")
            else:
                runtime.close()
                entry = ModelVersion(model_dir.name, str(number), config, model_dir / str(number))
                _, monitoring = load_version_profile(entry, real_root)
                if monitoring.startswith("invalid: "):  # the version would serve, unmonitored
                    problems.append(f"{entry.path}: {monitoring.removeprefix('invalid: ')}")
    return problems

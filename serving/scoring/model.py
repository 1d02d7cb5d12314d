"""One model version for batch scoring, loaded by the server's own repository code.

No second loader: the config is read by ``load_config``, the version folder chosen by the
config's version policy (``version_dirs`` + ``VersionPolicy.select``), and the runtime
built and warmed up by ``ModelRepository.open_runtime``, exactly as the server does.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from serving.errors import InvalidInput, ModelLoadError, ModelNotFound
from serving.modelconfig import ModelConfig, check_model_name, check_version_name, load_config
from serving.observability.profile import PROFILE_FILE, Profile, ProfileError, read_profile
from serving.repository.store import ModelRepository, ModelVersion, expected_output_values, version_dirs
from serving.runtimes.base import Runtime, feature_names
from serving.settings import Settings


class BatchError(Exception):
    """A batch run cannot start or must stop; the message is one clear line for the user."""


@dataclass(frozen=True)
class VersionRef:
    """Which version a run scores, resolved on the driver before anything loads."""

    model: str
    version: str
    config: ModelConfig
    path: Path
    repo: Path
    """The repository the version was found in: the runtime's files are confined to it."""


def resolve_version(
    repo: Path, model: str, version: str | None, settings: Settings | None = None
) -> VersionRef:
    """The model's config and version folder: ``version`` if given, else the newest version the
    config's version policy serves (what unversioned online requests get without a traffic policy)."""
    settings = (settings or Settings()).model_copy(update={"model_repo": repo})
    if not repo.is_dir():
        raise BatchError(f"model repository {repo} is not a directory")
    repository = ModelRepository(settings, ThreadPoolExecutor(max_workers=1))
    try:
        check_model_name(model)
        model_dir = repository.model_dir(model)
        if not model_dir.is_dir():
            raise ModelNotFound.unknown(model, detail=f"no folder in {repo}")
        config = load_config(model_dir / "config.yaml")
        available, _ = version_dirs(model_dir)
        if version is not None:
            check_version_name(version)
            if int(version) not in available:
                raise ModelNotFound.unknown(model, version, f"has {available}")
            chosen = version
        else:
            selected = config.version_policy.select(available)
            if not selected:
                raise ModelNotFound(f"{model_dir}: no version folders match the version policy")
            chosen = str(selected[-1])
    except (InvalidInput, ModelNotFound, ModelLoadError) as exc:
        raise BatchError(exc.message) from None
    return VersionRef(model, chosen, config, model_dir / chosen, repo)


def open_runtime(ref: VersionRef, settings: Settings) -> Runtime:
    """Load and warm up the version's runtime with ``ModelRepository.open_runtime``, confined
    to the run's repository as the server confines to its own (the settings' ``model_repo`` is
    the server's default, not this run's ``--repo``)."""
    settings = settings.model_copy(update={"model_repo": ref.repo})
    repository = ModelRepository(settings, ThreadPoolExecutor(max_workers=1))
    entry = ModelVersion(ref.model, ref.version, ref.config, ref.path)
    try:
        runtime, _, _ = repository.open_runtime(entry)
    except ModelLoadError as exc:
        raise BatchError(f"model '{ref.model}' version {ref.version} cannot load: {exc.message}") from None
    return runtime


def version_profile(ref: VersionRef) -> Profile:
    """The version's ``profile.json``, checked as the server checks it; BatchError if absent
    or refused."""
    spec = ref.config.inputs[0]
    path = ref.path / PROFILE_FILE
    if not path.is_file():
        raise BatchError(
            f"model '{ref.model}' version {ref.version} has no {PROFILE_FILE}: write one with 'serving profile'"
        )
    if len(spec.shape) != 2:
        raise BatchError("drift reports need a model with one [-1, n_features] input")
    try:
        return read_profile(path, spec.shape[1], spec.name, expected_output_values(ref.config))
    except ProfileError as exc:
        raise BatchError(f"{path}: {exc}") from None


def explanation_names(ref: VersionRef, runtime: Runtime, width: int) -> list[str]:
    """Feature names as the server's explain route gives them: the profile's, else the
    booster's own, else ``f0..fN``."""
    path = ref.path / PROFILE_FILE
    names: list[str] | None = None
    if path.is_file():
        try:
            names = [c.name for c in version_profile(ref).features]
        except BatchError:
            names = None
    names = names or feature_names(runtime)
    return names if names is not None and len(names) == width else [f"f{i}" for i in range(width)]

"""KServe's storage layout: /mnt/models is ONE model's folder (config.yaml + version folders) and
the model name comes from the InferenceService (--model-name={{.Name}}); a repository layout
with --model-name serves only that model."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from serving.cli import build_parser, settings_from
from serving.errors import ModelLoadError
from serving.repository.store import ModelRepository, validate_repository
from serving.settings import Settings
from tests.server_process import DEMO_REPO


def load(settings: Settings) -> ModelRepository:
    repository = ModelRepository(settings, ThreadPoolExecutor(max_workers=1))
    repository.load_all()
    return repository


def test_cli_accepts_kserve_spelling_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for flag in ("--model-name=iris", "--model_name=iris"):
        args = build_parser().parse_args(["serve", "--model-repo=/mnt/models", flag])
        assert settings_from(args).model_name == "iris"
    monkeypatch.setenv("SERVING_MODEL_NAME", "from-env")
    assert settings_from(build_parser().parse_args(["serve"])).model_name == "from-env"


def test_single_model_folder_is_served_under_the_given_name(tmp_path: Path) -> None:
    mnt = tmp_path / "models"
    shutil.copytree(DEMO_REPO / "iris-xgb", mnt)
    repository = load(Settings(model_repo=mnt, model_name="iris"))
    try:
        assert list(repository.models) == ["iris"]
        assert [v.version for v in repository.get("iris").ready_versions()] == ["1", "2"]
        assert repository.model_dir("iris") == mnt
    finally:
        repository.close()
    # Without a name, the folder's own name is used.
    repository = load(Settings(model_repo=mnt))
    assert list(repository.models) == ["models"]
    repository.close()
    assert validate_repository(mnt) == []


def test_repository_with_model_name_serves_only_that_model(tmp_path: Path) -> None:
    repository = load(Settings(model_repo=DEMO_REPO, model_name="cancer-xgb"))
    assert list(repository.models) == ["cancer-xgb"]
    assert repository.get("cancer-xgb").ready_versions()
    repository.close()
    with pytest.raises(ModelLoadError, match="model 'nope' has no folder in"):
        load(Settings(model_repo=DEMO_REPO, model_name="nope"))

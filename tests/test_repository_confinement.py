"""Confinement: every file the server reads and every version folder must resolve, after
links, inside the resolved repository root. Links inside the repository, and a root that is
itself a link (KServe's modelcar /mnt/models), are fine."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from serving.repository.store import OUTSIDE, ModelRepository, VersionState, validate_repository
from serving.settings import Settings
from tests.tinymodels import identity_onnx, train_booster, write_identity_model, write_xgb_model


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(1)
    yield pool
    pool.shutdown()


def load(root: Path, executor: ThreadPoolExecutor, **settings: object) -> ModelRepository:
    repository = ModelRepository(Settings(model_repo=root, **settings), executor)  # type: ignore[arg-type]
    repository.load_all()
    return repository


def hostile_repository(tmp_path: Path) -> tuple[Path, Path]:
    """A repository beside an "outside" folder that holds perfectly valid models: the links
    must be refused for where they point, not because the target is broken."""
    outside = tmp_path / "outside"
    write_xgb_model(outside, "booster", train_booster())
    write_identity_model(outside, "onnx", "FP32")
    root = tmp_path / "repo"
    write_identity_model(root, "good", "FP32")
    # a model file that is a link out of the repository
    write_xgb_model(root, "file-link", train_booster())
    (root / "file-link" / "1" / "model.json").unlink()
    (root / "file-link" / "1" / "model.json").symlink_to(outside / "booster" / "1" / "model.json")
    # a version folder that is a link out
    write_identity_model(root, "folder-link", "FP32")
    shutil.rmtree(root / "folder-link" / "1")
    (root / "folder-link" / "1").symlink_to(outside / "onnx" / "1", target_is_directory=True)
    # config.yaml that is a link out, and a whole model folder that is one
    write_identity_model(root, "config-link", "FP32")
    (root / "config-link" / "config.yaml").unlink()
    (root / "config-link" / "config.yaml").symlink_to(outside / "onnx" / "config.yaml")
    (root / "model-link").symlink_to(outside / "onnx", target_is_directory=True)
    # links that stay inside: a version folder and a model file of another model (relative links)
    write_identity_model(root, "inside", "FP32")
    (root / "inside" / "2").symlink_to("../good/1", target_is_directory=True)
    (root / "inside" / "3").mkdir()
    (root / "inside" / "3" / "model.onnx").symlink_to("../../good/1/model.onnx")
    (root / "inside" / "config.yaml").write_text(
        (root / "inside" / "config.yaml").read_text() + "version_policy: {all: true}\n"
    )
    return root, outside


def test_links_out_fail_only_their_version_and_links_inside_load(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    root, outside = hostile_repository(tmp_path)
    repository = load(root, executor)
    try:
        assert [v.version for v in repository.get("good").ready_versions()] == ["1"]
        assert [v.version for v in repository.get("inside").ready_versions()] == ["1", "2", "3"]
        for name, where in (("file-link", "file-link/1/model.json"), ("folder-link", "folder-link/1")):
            entry = repository.version(name, "1")
            assert entry.state is VersionState.FAILED and entry.runtime is None
            assert entry.reason.startswith(f"{root / where}: {OUTSIDE}"), entry.reason
            assert str(outside) in entry.reason  # the full reason says where it points
            assert entry.public_reason == f"{where}: {OUTSIDE}"
        for name in ("config-link", "model-link"):
            model = repository.get(name)
            assert model.config is None and not model.versions
            assert OUTSIDE in model.error and str(outside) in model.error
            assert model.public_error == f"{name}{'' if name == 'model-link' else '/config.yaml'}: {OUTSIDE}"
        rows = {(r["name"], r.get("version")): r for r in repository.index()}
        assert rows[("file-link", "1")] == {
            "name": "file-link",
            "version": "1",
            "state": "FAILED",
            "reason": f"file-link/1/model.json: {OUTSIDE}",
        }
        assert rows[("model-link", None)]["state"] == "UNAVAILABLE"
        assert all(str(tmp_path) not in str(row) for row in rows.values())
        detail = {(r["name"], r.get("version")): r for r in repository.index(detail=True)}
        assert str(outside) in detail[("folder-link", "1")]["reason"]
    finally:
        repository.close()


def test_a_link_to_a_system_file_is_never_handed_to_a_parser(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    root = tmp_path / "repo"
    write_xgb_model(root, "evil", train_booster())
    (root / "evil" / "1" / "model.json").unlink()
    (root / "evil" / "1" / "model.json").symlink_to("/etc/passwd")
    repository = load(root, executor)
    try:
        entry = repository.version("evil", "1")
        assert entry.state is VersionState.FAILED and OUTSIDE in entry.reason
        assert "XGBoost" not in entry.reason and "Check failed" not in entry.reason
    finally:
        repository.close()


def test_the_root_may_be_a_link(tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    real = tmp_path / "real"
    write_identity_model(real, "m", "FP32")
    (real / "alias").symlink_to(real / "m", target_is_directory=True)  # absolute link, inside
    link = tmp_path / "mnt-models"
    link.symlink_to(real, target_is_directory=True)
    repository = load(link, executor)
    try:
        assert [v.version for v in repository.get("m").ready_versions()] == ["1"]
        assert [v.version for v in repository.get("alias").ready_versions()] == ["1"]
    finally:
        repository.close()
    assert validate_repository(link) == []


def test_modelcar_layout_one_model_folder_behind_a_link(tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    """KServe's modelcar: /mnt/models -> /proc/<pid>/root/models, one model's folder."""
    image_root = tmp_path / "proc-1-root"
    write_identity_model(image_root, "models", "FP32")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    (mnt / "models").symlink_to(image_root / "models", target_is_directory=True)
    repository = load(mnt / "models", executor, model_name="iris")
    try:
        assert repository.single_model == "iris"
        assert [v.version for v in repository.get("iris").ready_versions()] == ["1"]
    finally:
        repository.close()
    # the same folder with a version that links out of it is refused
    (image_root / "elsewhere").mkdir()
    (image_root / "elsewhere" / "model.onnx").write_bytes(identity_onnx("FP32"))
    (image_root / "models" / "2").symlink_to(image_root / "elsewhere", target_is_directory=True)
    (image_root / "models" / "config.yaml").write_text(
        (image_root / "models" / "config.yaml").read_text() + "version_policy: {all: true}\n"
    )
    repository = load(mnt / "models", executor, model_name="iris")
    try:
        assert repository.version("iris", "1").ready
        entry = repository.version("iris", "2")
        assert entry.state is VersionState.FAILED and entry.public_reason == f"2: {OUTSIDE}"
    finally:
        repository.close()


def test_validate_repository_reports_links_out(tmp_path: Path) -> None:
    root, _ = hostile_repository(tmp_path)
    problems = validate_repository(root)
    assert sorted(p.split(": ")[0].removeprefix(f"{root}/") for p in problems) == [
        "config-link/config.yaml",
        "file-link/1/model.json",
        "folder-link/1",
        "model-link",
    ], problems
    assert all(OUTSIDE in p for p in problems)


def test_a_parser_message_quoting_the_file_stays_out_of_the_public_reason(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    root = tmp_path / "repo"
    write_identity_model(root, "m", "FP32")
    (root / "m" / "config.yaml").write_text("platform: onnx\nsecret-line: [unclosed {\n")
    repository = load(root, executor)
    try:
        model = repository.get("m")
        assert "while parsing" in model.error and "secret-line: [unclosed {" in model.error
        assert model.public_error == "m/config.yaml: not readable YAML (line 2, column 24)"
        assert "secret" not in model.public_error and "parsing" not in model.public_error
    finally:
        repository.close()

"""The model repository: every problem ``validate_repository`` finds names the file and what is
wrong; loading keeps serving the good models when others are broken; version policies."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from serving.errors import ModelLoadError
from serving.repository.store import ModelRepository, VersionState, validate_repository
from serving.settings import Settings
from tests.server_process import DEMO_REPO
from tests.tinymodels import (
    identity_onnx,
    spec,
    train_booster,
    write_config,
    write_identity_model,
    write_xgb_model,
)

ONNX_CONFIG = {
    "platform": "onnx",
    "inputs": [spec("x", "FP32", [-1, 3])],
    "outputs": [spec("y", "FP32", [-1, 3])],
}


def missing_config(root: Path) -> None:
    (root / "m" / "1").mkdir(parents=True)
    (root / "m" / "1" / "model.onnx").write_bytes(identity_onnx("FP32"))


def bad_config_field(root: Path) -> None:
    write_identity_model(root, "m", "FP32")
    write_config(root / "m", {**ONNX_CONFIG, "max_batch_size": "many"})


def missing_model_file(root: Path) -> None:
    write_config(root / "m", ONNX_CONFIG)
    (root / "m" / "1").mkdir()


def wrong_onnx_datatype(root: Path) -> None:
    write_identity_model(root, "m", "FP32")
    write_config(root / "m", {**ONNX_CONFIG, "inputs": [spec("x", "FP64", [-1, 3])]})


def wrong_onnx_names(root: Path) -> None:
    write_identity_model(root, "m", "FP32")
    write_config(root / "m", {**ONNX_CONFIG, "inputs": [spec("features", "FP32", [-1, 3])]})


def wrong_onnx_width(root: Path) -> None:
    write_identity_model(root, "m", "FP32")
    write_config(root / "m", {**ONNX_CONFIG, "outputs": [spec("y", "FP32", [-1, 4])]})


def wrong_onnx_rank(root: Path) -> None:
    write_identity_model(root, "m", "FP32")
    write_config(root / "m", {**ONNX_CONFIG, "outputs": [spec("y", "FP32", [-1])]})


def wrong_xgb_features(root: Path) -> None:
    write_xgb_model(root, "m", train_booster(n_features=4))
    write_config(
        root / "m",
        {
            "platform": "xgboost",
            "inputs": [spec("input", "FP32", [-1, 6])],
            "outputs": [spec("output", "FP32", [-1])],
        },
    )


def wrong_xgb_output_rank(root: Path) -> None:
    write_xgb_model(root, "m", train_booster(objective="multi:softprob", num_class=3), output_shape=[-1])


def corrupt_onnx(root: Path) -> None:
    write_identity_model(root, "m", "FP32")
    (root / "m" / "1" / "model.onnx").write_bytes(b"\x08\x07garbage" * 10)


def corrupt_xgb(root: Path) -> None:
    write_xgb_model(root, "m", train_booster())
    (root / "m" / "1" / "model.json").write_text('{"learner": {"broken"')


def corrupt_xgb_ubj(root: Path) -> None:
    write_xgb_model(root, "m", train_booster(), filename="model.ubj")
    (root / "m" / "1" / "model.ubj").write_bytes(b"{\x00\x01\x02")


def bad_version_folder(root: Path) -> None:
    write_identity_model(root, "m", "FP32")
    (root / "m" / "v2").mkdir()


def zero_padded_version(root: Path) -> None:
    write_identity_model(root, "m", "FP32")
    (root / "m" / "02").mkdir()


def no_version_matches_policy(root: Path) -> None:
    write_identity_model(root, "m", "FP32")
    write_config(root / "m", {**ONNX_CONFIG, "version_policy": {"specific": [5]}})


CASES: list[tuple[Callable[[Path], None], str, list[str]]] = [
    (missing_config, "m/config.yaml", ["missing (every model folder needs a config.yaml)"]),
    (bad_config_field, "m/config.yaml", ["max_batch_size: Input should be a valid integer"]),
    (missing_model_file, "m/1", ["no model.onnx for platform 'onnx'"]),
    (
        wrong_onnx_datatype,
        "m/1/model.onnx",
        ["input 'x' is tensor(float) in the model but FP64 in config.yaml"],
    ),
    (
        wrong_onnx_names,
        "m/1/model.onnx",
        [
            "config input 'features' is not in the model; the model has ['x']",
            "model inputs ['x'] are not declared",
        ],
    ),
    (wrong_onnx_width, "m/1/model.onnx", ["output 'y' dimension 1 is 3 in the model but 4 in config.yaml"]),
    (wrong_onnx_rank, "m/1/model.onnx", ["output 'y' has rank 2 in the model"]),
    (wrong_xgb_features, "m/1/model.json", ["the booster takes 4 features but config.yaml declares 6"]),
    (wrong_xgb_output_rank, "m/1/model.json", ["config.yaml declares output rank 1"]),
    (corrupt_onnx, "m/1/model.onnx", ["onnxruntime cannot load it"]),
    (corrupt_xgb, "m/1/model.json", ["XGBoost cannot load it"]),
    (corrupt_xgb_ubj, "m/1/model.ubj", ["XGBoost cannot load it"]),
    (bad_version_folder, "m/v2", ["invalid model version 'v2': versions are positive integers"]),
    (zero_padded_version, "m/02", ["invalid model version '02'"]),
    (no_version_matches_policy, "m", ["no version folders match the version policy"]),
]


@pytest.mark.parametrize(("build", "where", "texts"), CASES, ids=[c[0].__name__ for c in CASES])
def test_validate_repository_names_the_file_and_problem(
    tmp_path: Path, build: Callable[[Path], None], where: str, texts: list[str]
) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    build(root)
    problems = validate_repository(root)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{root / where}: "), problems
    for text in texts:
        assert text in problems[0]
    assert "Traceback" not in problems[0]


@pytest.mark.parametrize("name", ["bad..name", "-dash", "with space", "émoji"])
def test_validate_repository_rejects_unsafe_model_folder_names(tmp_path: Path, name: str) -> None:
    write_identity_model(tmp_path, name, "FP32")
    assert validate_repository(tmp_path) == [
        f"{tmp_path / name}: invalid model name '{name}': use letters, digits, '_', '.', '-'"
    ]


def test_validate_repository_reports_every_problem(tmp_path: Path) -> None:
    builds = [missing_config, wrong_onnx_datatype, corrupt_xgb, bad_version_folder]
    for i, build in enumerate(builds):
        sub = tmp_path / f"tmp{i}"
        sub.mkdir()
        build(sub)
        shutil.move(sub / "m", tmp_path / "repo" / f"model{i}")
    problems = validate_repository(tmp_path / "repo")
    assert [p.split(":")[0].split("/repo/")[1] for p in problems] == [
        "model0/config.yaml",
        "model1/1/model.onnx",
        "model2/1/model.json",
        "model3/v2",
    ]


def test_validate_repository_on_the_demo_and_on_nothing(tmp_path: Path) -> None:
    assert validate_repository(DEMO_REPO) == []
    assert validate_repository(tmp_path) == [f"{tmp_path}: no model folders"]
    assert validate_repository(tmp_path / "absent") == [f"{tmp_path / 'absent'}: not a directory"]


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(1)
    yield pool
    pool.shutdown()


def test_loading_keeps_good_models_and_records_why_others_failed(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    root = tmp_path / "repo"
    shutil.copytree(DEMO_REPO / "iris-xgb", root / "iris-xgb")
    for i, build in enumerate([missing_config, corrupt_onnx, wrong_xgb_features]):
        sub = tmp_path / f"tmp{i}"
        sub.mkdir()
        build(sub)
        shutil.move(sub / "m", root / f"broken{i}")
    repository = ModelRepository(Settings(model_repo=root), executor)
    repository.load_all()
    try:
        assert [v.version for v in repository.get("iris-xgb").ready_versions()] == ["1", "2"]
        no_config = repository.get("broken0")
        assert no_config.config is None and "config.yaml: missing" in no_config.error
        corrupt = repository.version("broken1", "1")
        assert corrupt.state is VersionState.FAILED and "onnxruntime cannot load it" in corrupt.reason
        features = repository.version("broken2", "1")
        assert features.state is VersionState.FAILED and "takes 4 features" in features.reason
        index = {(r["name"], r.get("version")): r["state"] for r in repository.index()}
        assert index == {
            ("broken0", None): "UNAVAILABLE",
            ("broken1", "1"): "FAILED",
            ("broken2", "1"): "FAILED",
            ("iris-xgb", "1"): "READY",
            ("iris-xgb", "2"): "READY",
        }
    finally:
        repository.close()


def test_version_policy_decides_what_loads(tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    root = tmp_path / "repo"
    write_identity_model(root, "m", "FP32")
    for version in (2, 3):
        shutil.copytree(root / "m" / "1", root / "m" / str(version))
    write_config(root / "m", {**ONNX_CONFIG, "version_policy": {"latest": 2}})
    repository = ModelRepository(Settings(model_repo=root), executor)
    repository.load_all()
    try:
        assert sorted(repository.get("m").versions) == ["2", "3"]
    finally:
        repository.close()


def test_missing_repository_is_an_error(tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    repository = ModelRepository(Settings(model_repo=tmp_path / "nope"), executor)
    with pytest.raises(ModelLoadError, match="is not a directory"):
        repository.load_all()


def test_a_repository_re_read_retries_a_failed_version_once_its_files_change(tmp_path: Path) -> None:
    import asyncio

    from serving.server import build, load_models
    from tests.tinymodels import identity_onnx, write_identity_model

    write_identity_model(tmp_path / "repo", "m", "FP32")
    good = (tmp_path / "repo" / "m" / "1" / "model.onnx").read_bytes()
    (tmp_path / "repo" / "m" / "1" / "model.onnx").write_bytes(b"broken")
    parts = build(Settings(model_repo=tmp_path / "repo", grpc_port=-1))
    load_models(parts)
    assert parts.control is not None
    entry = parts.repository.models["m"].versions["1"]
    assert entry.state is VersionState.FAILED

    async def rescan() -> dict[str, list[str]]:
        assert parts.control is not None
        return await parts.control.rescan()

    assert asyncio.run(rescan()) == {"loaded": [], "unloaded": [], "failed": []}  # unchanged: no retry
    (tmp_path / "repo" / "m" / "1" / "model.onnx").write_bytes(good)
    assert good == identity_onnx("FP32", 3)
    assert asyncio.run(rescan())["loaded"] == ["m/1"]
    assert parts.repository.models["m"].versions["1"].state is VersionState.READY
    parts.executor.shutdown()

"""The runtime contract, run over every registered platform (serving/platforms.py), plus a toy
platform registered from a test to show what adding a runtime takes.

For each platform: it loads through the registry's loader; predict answers the config's output
names with one row per input row; a batch gives what its rows give one by one; a config whose
signature does not match the file, and a version folder without the model file, fail to load
with a ModelLoadError whose public reason says so; warm-up runs on inputs generated from the
config. A platform added to the registry without a tiny model here fails ``test_every_platform_
has_a_contract_model``: the suite cannot silently skip it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from serving import platforms
from serving.errors import ModelLoadError
from serving.inference import InferenceRequest, Tensor
from serving.modelconfig import ModelConfig, load_config
from serving.runtimes.base import load_runtime
from serving.runtimes.warmup import run_warmup
from serving.server import build, load_models
from serving.settings import Settings
from tests import tinymodels

FEATURES = 4


def _onnx(root: Path) -> Path:
    return tinymodels.write_identity_model(root, "contract", "FP32", FEATURES)


def _xgboost(root: Path) -> Path:
    return tinymodels.write_xgb_model(root, "contract", tinymodels.train_booster(FEATURES))


def _lightgbm(root: Path) -> Path:
    return tinymodels.write_lgbm_model(root, "contract", tinymodels.train_lgbm(FEATURES))


def _toy(root: Path) -> Path:
    model_dir = root / "contract"
    tinymodels.write_config(
        model_dir,
        {
            "platform": "toy",
            "inputs": [tinymodels.spec("x", "FP32", [-1, FEATURES])],
            "outputs": [tinymodels.spec("y", "FP32", [-1, 2])],
        },
    )
    (model_dir / "1").mkdir()
    (model_dir / "1" / "model.toy").write_text("1.0 -2.0\n")
    return model_dir


BUILDERS: dict[str, Callable[[Path], Path]] = {"onnx": _onnx, "xgboost": _xgboost, "lightgbm": _lightgbm}
"""A tiny model of each built-in platform: adding a platform to the registry means adding one here."""

TOY = platforms.Platform(
    name="toy",
    model_files=("model.toy",),
    oip_platform="toy_text",
    triton_backend="toy",
    loader="tests.runtimes.toyruntime:ToyRuntime",
    kserve_format="toy",
    kserve_format_version="1",
)


@pytest.fixture
def toy_platform() -> Iterator[platforms.Platform]:
    platforms.register(TOY)
    try:
        yield TOY
    finally:
        platforms.unregister(TOY.name)


@pytest.fixture(params=[*sorted(BUILDERS), "toy"])
def model_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    name = request.param
    if name == "toy":
        request.getfixturevalue("toy_platform")
        yield _toy(tmp_path)
    else:
        yield BUILDERS[name](tmp_path)


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, FEATURES)).astype(np.float32)


def test_every_platform_has_a_contract_model() -> None:
    assert sorted(BUILDERS) == platforms.names()


def test_loads_through_the_registry_and_answers_each_row(model_dir: Path) -> None:
    config = load_config(model_dir / "config.yaml")
    runtime = load_runtime(config, model_dir / "1", Settings())
    loader = platforms.get(config.platform).loader
    assert f"{type(runtime).__module__}:{type(runtime).__name__}" == loader
    out = runtime.predict({config.inputs[0].name: rows(5)})
    assert list(out) == [s.name for s in config.outputs]
    assert all(array.shape[0] == 5 for array in out.values())
    runtime.close()


def test_a_batch_answers_what_its_rows_answer_alone(model_dir: Path) -> None:
    config = load_config(model_dir / "config.yaml")
    runtime = load_runtime(config, model_dir / "1", Settings())
    name = config.inputs[0].name
    batch = rows(7, seed=1)
    together = runtime.predict({name: batch})
    for i in range(len(batch)):
        alone = runtime.predict({name: batch[i : i + 1]})
        for output, array in alone.items():
            np.testing.assert_allclose(array[0], together[output][i], rtol=1e-5, atol=1e-6)
    runtime.close()


def _with_config(model_dir: Path, change: Callable[[dict[str, Any]], None]) -> ModelConfig:
    doc = yaml.safe_load((model_dir / "config.yaml").read_text())
    change(doc)
    (model_dir / "config.yaml").write_text(yaml.safe_dump(doc))
    return load_config(model_dir / "config.yaml")


def test_a_signature_the_file_does_not_have_fails_to_load(model_dir: Path) -> None:
    def wider(doc: dict[str, Any]) -> None:
        doc["inputs"][0]["shape"] = [-1, FEATURES + 3]
        if doc["platform"] in ("onnx",):
            doc["outputs"][0]["shape"] = [-1, FEATURES + 3]
        if doc["platform"] == "toy":
            doc["outputs"][0]["shape"] = [-1, 5]

    config = _with_config(model_dir, wider)
    with pytest.raises(ModelLoadError) as caught:
        load_runtime(config, model_dir / "1", Settings())
    assert "signature mismatch" in (caught.value.public or "")


def test_a_version_without_its_model_file_fails_with_the_file_names(model_dir: Path) -> None:
    config = load_config(model_dir / "config.yaml")
    for file in (model_dir / "1").iterdir():
        file.unlink()
    with pytest.raises(ModelLoadError) as caught:
        load_runtime(config, model_dir / "1", Settings())
    for name in platforms.get(config.platform).model_files:
        assert name in str(caught.value)


def test_warmup_runs_on_generated_inputs(model_dir: Path) -> None:
    config = load_config(model_dir / "config.yaml")
    runtime = load_runtime(config, model_dir / "1", Settings())
    assert run_warmup(runtime, config) >= 1
    runtime.close()


def test_an_unknown_platform_is_an_error_naming_the_known_ones(tmp_path: Path) -> None:
    model_dir = _onnx(tmp_path)
    with pytest.raises(ModelLoadError) as caught:
        _with_config(model_dir, lambda doc: doc.update(platform="tensorflow"))
    assert "unknown platform 'tensorflow'" in str(caught.value)
    for name in platforms.names():
        assert name in str(caught.value)
    with pytest.raises(platforms.UnknownPlatform):
        platforms.get("tensorflow")


def test_a_toy_platform_serves_through_the_repository_and_dataplane(
    tmp_path: Path, toy_platform: platforms.Platform
) -> None:
    """Adding a platform = its module (tests/runtimes/toyruntime.py) + this one registry entry:
    the real repository loads it, the dataplane answers with it, metadata names its platform."""
    _toy(tmp_path / "repo")
    parts = build(Settings(model_repo=tmp_path / "repo", grpc_port=-1, predict_threads=1))
    try:
        load_models(parts)
        x = rows(3)
        request = InferenceRequest("contract", None, [Tensor("x", "FP32", x.shape, x)])
        response = asyncio.run(parts.dataplane.infer(request))
        expected = x.sum(axis=1, keepdims=True) * np.array([1.0, -2.0], dtype=np.float32)
        np.testing.assert_allclose(response.outputs[0].data, expected, rtol=1e-6)
        assert parts.dataplane.model_metadata("contract")["platform"] == toy_platform.oip_platform
    finally:
        parts.executor.shutdown()


def test_register_refuses_a_second_entry_and_a_bad_loader() -> None:
    with pytest.raises(ValueError, match="registered already"):
        platforms.register(platforms.ONNX)
    with pytest.raises(ValueError, match="module:Class"):
        platforms.register(platforms.Platform("bad", ("m",), "b", "b", "no-colon", "b", "1"))
    with pytest.raises(ValueError, match="built in"):
        platforms.unregister("onnx")


ROOT = Path(__file__).resolve().parents[2]


def _formats(doc: dict[str, Any]) -> dict[str, str]:
    return {f["name"]: str(f["version"]) for f in doc["spec"]["supportedModelFormats"]}


def test_the_manifests_and_the_chart_advertise_the_registry_formats() -> None:
    """The deployment files spell formats too (KServe reads them): they must be the registry's."""
    expected = {p.kserve_format: p.kserve_format_version for p in platforms.all_platforms()}
    for name in ("servingruntime.yaml", "servingruntime-knative.yaml", "clusterservingruntime.yaml"):
        docs = [d for d in yaml.safe_load_all((ROOT / "manifests" / "runtime" / name).read_text()) if d]
        for doc in docs:
            assert _formats(doc) == expected, name

    schema = json.loads((ROOT / "charts" / "serving" / "values.schema.json").read_text())
    enums = [node["enum"] for node in _walk(schema) if set(node) == {"enum"}]
    assert sorted(p.kserve_format for p in platforms.all_platforms()) in [sorted(e) for e in enums]


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)

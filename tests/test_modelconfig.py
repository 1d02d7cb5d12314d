"""config.yaml schema: every error names the file and the field; names and version policies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from serving.errors import InvalidInput, ModelLoadError
from serving.modelconfig import VersionPolicy, check_model_name, check_version_name, load_config
from tests.tinymodels import spec, write_config

GOOD: dict[str, Any] = {
    "platform": "onnx",
    "inputs": [spec("x", "FP32", [-1, 3])],
    "outputs": [spec("y", "FP32", [-1, 3])],
}


def config_error(tmp_path: Path, doc: Any) -> str:
    path = tmp_path / "m" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    with pytest.raises(ModelLoadError) as info:
        load_config(path)
    message = info.value.message
    assert message.startswith(f"{path}: ")
    return message


def test_full_schema_loads(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "m",
        {
            **GOOD,
            "max_batch_size": 64,
            "version_policy": {"specific": [1, 3]},
            "batching": {"enabled": True, "max_queue_delay_us": 200},
            "traffic": {"weights": {"1": 90, "3": 10}},
            "description": "a model",
        },
    )
    config = load_config(path)
    assert config.platform == "onnx" and config.max_batch_size == 64
    assert config.inputs[0].shape == (-1, 3)
    assert config.version_policy.select([1, 2, 3]) == [1, 3]
    assert config.batching.enabled and config.batching.max_queue_delay_us == 200
    assert config.traffic.weights == {"1": 90.0, "3": 10.0}


@pytest.mark.parametrize(
    ("change", "field", "text"),
    [
        ({"platform": "tensorflow"}, "platform", "'onnx', 'xgboost' or 'lightgbm'"),
        ({"inputs": []}, "inputs", "at least 1 item"),
        ({"inputs": [spec("x", "FLOAT", [-1, 3])]}, "inputs.0.datatype", "unknown datatype 'FLOAT'"),
        ({"inputs": [spec("x", "FP32", [])]}, "inputs.0.shape", "at least the batch dimension"),
        ({"inputs": [spec("x", "FP32", [-1, 0])]}, "inputs.0.shape", "positive, or -1"),
        ({"outputs": [spec("y", "FP32", [3])]}, "outputs.y.shape", "first dimension is the batch, -1"),
        (
            {"outputs": [spec("y", "FP32", [-1]), spec("y", "FP32", [-1])]},
            "outputs",
            "duplicate tensor names",
        ),
        ({"max_batch_size": 0}, "max_batch_size", "greater than or equal to 1"),
        (
            {"version_policy": {"latest": 1, "all": True}},
            "version_policy",
            "only one of latest, all, specific",
        ),
        ({"version_policy": {"latest": 0}}, "version_policy.latest", "greater than or equal to 1"),
        (
            {"batching": {"max_queue_delay_us": -1}},
            "batching.max_queue_delay_us",
            "greater than or equal to 0",
        ),
        ({"traffic": {"shadow_fraction": 2}}, "traffic.shadow_fraction", "less than or equal to 1"),
        ({"surprise": 1}, "surprise", "Extra inputs are not permitted"),
        ({"inputs": [{"name": "x", "datatype": "FP32"}]}, "inputs.0.shape", "Field required"),
    ],
)
def test_bad_fields_name_the_file_and_field(
    tmp_path: Path, change: dict[str, Any], field: str, text: str
) -> None:
    message = config_error(tmp_path, {**GOOD, **change})
    assert f": {field}: " in message or f"{field}." in message, message
    assert text in message


def test_xgboost_signature_rules(tmp_path: Path) -> None:
    two_inputs = {
        **GOOD,
        "platform": "xgboost",
        "inputs": [spec("a", "FP32", [-1, 3]), spec("b", "FP32", [-1, 3])],
    }
    assert "exactly one input and give exactly one output" in config_error(tmp_path, two_inputs)
    rank3 = {**GOOD, "platform": "xgboost", "inputs": [spec("a", "FP32", [-1, 3, 2])]}
    assert "xgboost input shape is [-1, n_features]" in config_error(tmp_path, rank3)


def test_every_bad_field_is_reported_at_once(tmp_path: Path) -> None:
    message = config_error(
        tmp_path, {**GOOD, "platform": "pytorch", "max_batch_size": -5, "inputs": [spec("x", "INT3", [-1])]}
    )
    for field in ("platform", "max_batch_size", "inputs.0.datatype"):
        assert f"{field}: " in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("platform: [onnx\n", "not readable YAML"),
        ("- a\n- b\n", "expected a mapping at the top level"),
        ("", "expected a mapping at the top level"),
    ],
)
def test_unreadable_yaml(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in config_error(tmp_path, text)


def test_missing_config(tmp_path: Path) -> None:
    with pytest.raises(
        ModelLoadError, match=r"config.yaml: missing \(every model folder needs a config.yaml\)"
    ):
        load_config(tmp_path / "config.yaml")


@pytest.mark.parametrize("name", ["iris", "iris-xgb", "a_b.c", "X1"])
def test_good_model_names(name: str) -> None:
    assert check_model_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "..", "a..b", "../etc", "a/b", "a\\b", ".hidden", "-x", "a b", "x" * 200, "é"]
)
def test_bad_model_names(name: str) -> None:
    with pytest.raises(InvalidInput, match="invalid model name"):
        check_model_name(name)


@pytest.mark.parametrize("version", ["0", "01", "-1", "1.0", "v1", "..", "1/2", "", "9" * 30])
def test_bad_version_names(version: str) -> None:
    with pytest.raises(InvalidInput, match="versions are positive integers"):
        check_version_name(version)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ({}, [7]),
        ({"latest": 2}, [3, 7]),
        ({"all": True}, [1, 3, 7]),
        ({"specific": [1, 7, 9]}, [1, 7]),
    ],
)
def test_version_policy(policy: dict[str, Any], expected: list[int]) -> None:
    assert VersionPolicy.model_validate(policy).select([3, 1, 7]) == expected


def test_prediction_buckets(tmp_path: Path) -> None:
    """Edges for the prediction series: per output, finite, increasing, at most 50."""
    path = tmp_path / "ok" / "config.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump({**GOOD, "prediction_buckets": {"y": [-1.5, 0, 2.5]}}))
    assert load_config(path).prediction_buckets == {"y": (-1.5, 0.0, 2.5)}
    for edges, text in (
        ([0.5, 0.5], "finite edges in increasing order"),
        ([1, 0], "finite edges in increasing order"),
        ([0, ".inf"], "finite edges in increasing order"),
        (list(range(51)), "1 to 50 edges"),
    ):
        doc = {**GOOD, "prediction_buckets": {"y": edges}}
        assert text in config_error(tmp_path, yaml.safe_dump(doc).replace("'.inf'", ".inf")), edges
    assert "no output of that name" in config_error(tmp_path, {**GOOD, "prediction_buckets": {"z": [1]}})

"""Commands whose optional extra is missing say which one to install, in one line, without a
traceback (the runtime image has neither extra; tests/deploy/test_image.py runs them there too)."""

from __future__ import annotations

import importlib.util

import pytest

from serving import extras
from serving.cli import main


def hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(extras, "find_spec", lambda name: None if name in modules else real(name))


@pytest.mark.parametrize(
    "argv",
    [["export", "model.json", "--model", "m"], ["demo-models", "somewhere"]],
    ids=["export", "demo-models"],
)
def test_export_commands_without_the_export_extra_exit_2_naming_it(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hide(monkeypatch, "onnxmltools", "skl2onnx")
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1, err
    assert f"serving {argv[0]} needs the 'export' extra (" in err and "onnxmltools" in err
    assert "pip install 'serving[export]'" in err


def test_rollout_on_an_inferenceservice_without_kubernetes_names_the_rollout_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The rollout CLI's error status (3), as for every rollout error: 2 means 'hold' there."""
    hide(monkeypatch, "kubernetes")
    assert main(["rollout", "status", "iris", "--mode", "knative"]) == 3
    out, err = capsys.readouterr()
    lines = (out + err).strip().splitlines()
    assert len(lines) == 1, lines
    assert "needs the 'rollout' extra (kubernetes not installed): pip install 'serving[rollout]'" in lines[0]


@pytest.mark.parametrize(
    ("engine", "hidden", "extra"),
    [("local", ("pyarrow",), "batch"), ("spark", ("pyspark",), "spark")],
    ids=["local", "spark"],
)
def test_batch_without_its_extra_exits_2_naming_it(
    engine: str,
    hidden: tuple[str, ...],
    extra: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hide(monkeypatch, *hidden)
    argv = ["batch", "iris-xgb", "--input", "in.parquet", "--output", "out.parquet", "--engine", engine]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    assert f"needs the '{extra}' extra ({hidden[0]} not installed): pip install 'serving[{extra}]'" in err


def test_installed_extras_report_nothing() -> None:
    for command in extras.NEEDS:
        assert extras.missing_extra(command) is None, command

"""onnxruntime's C binding called directly (serving/runtimes/ortcall.py): the same outputs as
the wrapper's ``run``, and the wrapper, with one warning, whenever the binding is missing or
disagrees on the probe; ``onnx_direct_run=False`` keeps the wrapper (the fallback CI runs)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serving.runtimes import ortcall
from serving.settings import Settings
from tests.runtimes.test_onnx import identity_runtime
from tests.server_process import DEMO_REPO

ROWS = np.arange(12, dtype=np.float32).reshape(4, 3)


def _wrapper_run(runtime: Any) -> Any:
    return runtime._session.run


@pytest.mark.parametrize("datatype", ["FP32", "INT64", "BYTES", "BOOL"])
def test_direct_run_gives_the_wrappers_outputs(tmp_path: Path, datatype: str) -> None:
    runtime = identity_runtime(tmp_path, datatype)
    assert runtime._run != _wrapper_run(runtime)  # the binding serves
    if datatype == "BYTES":
        data = np.empty((2, 3), dtype=object)
        data.ravel()[:] = [b"a", b"bc", b"", "é".encode(), b"x", b"yz"]
    else:
        data = ROWS.astype({"FP32": np.float32, "INT64": np.int64, "BOOL": bool}[datatype])
    direct = runtime.predict({"x": data})["y"]
    runtime._run = ortcall.public_run(runtime._session)
    assert np.array_equal(direct, runtime.predict({"x": data})["y"])


def test_the_setting_keeps_the_wrapper(tmp_path: Path) -> None:
    runtime = identity_runtime(tmp_path, "FP32", Settings(onnx_direct_run=False))
    assert runtime._run == _wrapper_run(runtime)
    assert np.array_equal(runtime.predict({"x": ROWS})["y"], ROWS)


class _NoBinding:
    """A session as another onnxruntime might shape it: ``run`` only."""

    def __init__(self, session: Any) -> None:
        self.run = session.run


def test_a_session_without_the_binding_uses_the_wrapper_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    session = identity_runtime(tmp_path, "FP32", Settings(onnx_direct_run=False))._session
    shaped = _NoBinding(session)
    with caplog.at_level(logging.WARNING, logger="serving.runtimes.ortcall"):
        run = ortcall.direct_run(shaped, ["y"], {"x": ROWS}, "m/1/model.onnx")
    assert run == shaped.run
    assert caplog.messages == [
        "m/1/model.onnx: onnxruntime called through its Python wrapper (slower): the session has no C "
        "binding to call (InferenceSession._sess.run)"
    ]


def test_a_binding_that_disagrees_on_the_probe_is_not_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    session = identity_runtime(tmp_path, "FP32", Settings(onnx_direct_run=False))._session

    class _Off:
        def __init__(self, real: Any) -> None:
            self._real = real

        def run(self, names: Any, feed: Any, options: Any) -> list[Any]:
            return [out + 1 for out in self._real.run(names, feed, options)]

    class _Shaped:
        def __init__(self) -> None:
            self._sess = _Off(session._sess)
            self.run = session.run

    shaped = _Shaped()
    with caplog.at_level(logging.WARNING, logger="serving.runtimes.ortcall"):
        run = ortcall.direct_run(shaped, ["y"], {"x": ROWS}, "m")
    assert run == shaped.run
    assert "differ from the wrapper's on the probe inputs" in caplog.text
    # agreeing, the same shape is served through the binding
    assert ortcall.direct_run(session, ["y"], {"x": ROWS}, "m") != session.run


@pytest.mark.parametrize("model", ["cancer-onnx", "digits-mlp"])
def test_the_demo_onnx_models_answer_the_same_both_ways(model: str) -> None:
    """Real graphs (an exported tree ensemble, an MLP), not only identities."""
    from serving.modelconfig import load_config
    from serving.runtimes.onnx import OnnxRuntime

    config = load_config(DEMO_REPO / model / "config.yaml")
    path = DEMO_REPO / model / "1" / "model.onnx"
    direct = OnnxRuntime(path, config, Settings())
    wrapper = OnnxRuntime(path, config, Settings(onnx_direct_run=False))
    assert direct._run != direct._session.run and wrapper._run == wrapper._session.run
    spec = config.inputs[0]
    rows = np.random.default_rng(0).normal(scale=5.0, size=(64, spec.shape[1])).astype(np.float32)
    a, b = direct.predict({spec.name: rows}), wrapper.predict({spec.name: rows})
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_a_boosters_onnx_twin_calls_the_binding_unless_told_not_to(monkeypatch: pytest.MonkeyPatch) -> None:
    """The native booster's twin (serving/runtimes/fastpath.py) runs its session through the
    binding too; both ways it passes the guard against XGBoost and answers alike."""
    from serving.modelconfig import load_config
    from serving.runtimes.xgboost import XGBoostRuntime

    model = DEMO_REPO / "iris-xgb"
    config = load_config(model / "config.yaml")
    rows = np.random.default_rng(1).normal(loc=4.0, scale=2.0, size=(32, 4)).astype(np.float32)
    from serving.runtimes import fastpath

    made: list[Any] = []

    def recording(session: Any, names: Any, probe: Any, what: str) -> Any:
        made.append(what)
        return ortcall.direct_run(session, names, probe, what)

    monkeypatch.setattr(fastpath, "direct_run", recording)
    from serving.runtimes import xgboost as xgboost_runtime

    monkeypatch.setattr(xgboost_runtime, "_GUARDED", {})  # verdicts other tests left for this file
    answers = []
    for direct in (True, False):
        made.clear()
        runtime = XGBoostRuntime(model / "1" / "model.json", config, Settings(onnx_direct_run=direct))
        assert runtime.predict_paths["small"].path == "onnx-twin", runtime.predict_paths
        assert made == (["ONNX twin"] if direct else [])
        answers.append(runtime.predict({config.inputs[0].name: rows}))
    assert all(np.array_equal(answers[0][k], answers[1][k]) for k in answers[0])

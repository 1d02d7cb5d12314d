"""onnxruntime's ``InferenceSession.run`` without its Python wrapper's per-call checks.

Why: for one row the wrapper's checks (graph capture, the feed's names against the graph's,
OrtValue ownership, an EP-fallback ``try``) are a few µs around a 10-20 µs C call, and every
answer of an ONNX version or of a booster's ONNX twin pays them. Our requests arrive already
checked: the dataplane validated the inputs against the version's signature, which matched the
session's at load, the feed holds numpy arrays only (no OrtValue), and sessions run on the CPU
provider alone (no EP to fall back from).

How: the session's C binding (``InferenceSession._sess``, private, onnxruntime bounded in
pyproject.toml), called as the wrapper calls it. Guard: ``direct_run`` calls both on probe inputs
at load and hands out the binding only when it exists and gives the wrapper's arrays exactly;
else the wrapper's ``run``, with one warning. ``Settings.onnx_direct_run = False`` keeps the
wrapper (the fallback CI runs).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from serving.inference import Array

log = logging.getLogger("serving.runtimes.ortcall")

Run = Callable[[Sequence[str], dict[str, Array]], list[Any]]


def public_run(session: Any) -> Run:
    """The wrapper's ``run(names, feed)``."""
    run: Run = session.run
    return run


def direct_run(session: Any, names: Sequence[str], probe: dict[str, Array] | None, what: str) -> Run:
    """``run(names, feed)`` through the session's C binding when it agrees with the wrapper on
    ``probe`` (see the module docstring); the wrapper's otherwise. ``what`` names the session in
    the warning."""
    problem = _problem(session, names, probe)
    if problem is not None:
        log.warning("%s: onnxruntime called through its Python wrapper (slower): %s", what, problem)
        return public_run(session)
    binding = session._sess.run

    def run(output_names: Sequence[str], feed: dict[str, Array]) -> list[Any]:
        return binding(output_names, feed, None)  # type: ignore[no-any-return]

    return run


def _problem(session: Any, names: Sequence[str], probe: dict[str, Array] | None) -> str | None:
    binding = getattr(getattr(session, "_sess", None), "run", None)
    if not callable(binding):
        return "the session has no C binding to call (InferenceSession._sess.run)"
    if probe is None:
        return "no probe inputs to check the C binding against the wrapper"
    try:
        expected = session.run(list(names), probe)
        found = binding(list(names), probe, None)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    if len(found) != len(expected) or not all(_same(a, b) for a, b in zip(found, expected, strict=False)):
        return "the C binding's outputs differ from the wrapper's on the probe inputs"
    return None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return (
            a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
        )
    return bool(a == b)

"""Picks the model version that serves a request: pins, weighted canaries, sticky keys, shadow.

Pure code: no I/O, no server, no clock. ``choose`` is a function of (weights, READY
versions, request key, random number); ``Router`` adds the run-time policy table and a
random source you can seed, and is what the dataplane calls.

Rules, in order:

1. An explicit version (``/v2/models/m/versions/{v}/infer``) always wins; it must be READY.
2. With no weights, the latest READY version serves everything.
3. Otherwise each READY version with a positive weight gets weight / (sum of READY weights):
   versions that are loading, failed or unloading get nothing and the rest renormalise.
   If no READY version has a positive weight, the latest READY version serves, so removing
   a version never turns into errors.
4. A request with a routing key (header ``x-routing-key`` or parameter ``routing_key``) is
   placed by weighted rendezvous hashing: each version scores ``-w / ln(u)`` with ``u`` a
   hash of (key, version) in (0, 1), the highest score wins. That picks each version with
   probability proportional to its weight, the same key always lands on the same version
   while the weights and READY set are unchanged, and when weights change only the keys
   that must move do (raising a canary's weight only pulls keys onto it).
5. Without a key, one uniform draw from the random source picks by cumulative weight.

The ``variant`` label: the ``stable`` version is ``traffic.stable_version`` when set and
READY, else the oldest READY version with a positive weight (the incumbent of a canary),
else the latest READY version. Every other version is ``canary``. Pinned requests get the
label of the version they name.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from serving.errors import ModelNotFound, ModelNotReady
from serving.modelconfig import TrafficConfig
from serving.repository.store import Model, ModelVersion

STABLE = "stable"
CANARY = "canary"
SHADOW = "shadow"

_DEFAULT_POLICY = TrafficConfig()
_TWO_64 = float(2**64)


def key_unit(key: str, version: str) -> float:
    """A stable hash of (key, version) mapped into the open interval (0, 1)."""
    digest = hashlib.blake2b(f"{version}\x00{key}".encode(errors="replace"), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / _TWO_64


def shares(weights: Mapping[str, float], ready: Sequence[str]) -> dict[str, float]:
    """The fraction of routed traffic each READY version gets (sums to 1 unless nothing is
    READY). ``ready`` is ordered oldest first."""
    if not ready:
        return {}
    positive = {v: weights[v] for v in ready if weights.get(v, 0.0) > 0.0}
    if not positive:
        return {ready[-1]: 1.0}
    total = sum(positive.values())
    return {v: w / total for v, w in positive.items()}


def stable_of(traffic: TrafficConfig, ready: Sequence[str]) -> str | None:
    """The version labelled ``stable`` (see the module docstring)."""
    if traffic.stable_version is not None and traffic.stable_version in ready:
        return traffic.stable_version
    for version in ready:
        if traffic.weights.get(version, 0.0) > 0.0:
            return version
    return ready[-1] if ready else None


def _pick(
    candidates: Sequence[tuple[str, float]], cumulative: Sequence[float], key: str | None, u: float
) -> int:
    """Index of the chosen candidate: rendezvous hashing on ``key``, else the cumulative
    weight interval that ``u`` (uniform in [0, 1)) falls into."""
    if len(candidates) == 1:
        return 0
    if key is not None:
        best, best_score = 0, -math.inf
        for i, (version, weight) in enumerate(candidates):
            score = -weight / math.log(key_unit(key, version))
            if score > best_score:
                best, best_score = i, score
        return best
    # first interval whose upper end is above the point (min(): float rounding at the top)
    return min(bisect.bisect_right(cumulative, u * cumulative[-1]), len(candidates) - 1)


def _candidates(
    weights: Mapping[str, float], ready: Sequence[str]
) -> tuple[list[tuple[str, float]], list[float]]:
    candidates = [(v, weights[v]) for v in ready if weights.get(v, 0.0) > 0.0]
    return candidates, list(itertools.accumulate(w for _, w in candidates))


def choose(
    weights: Mapping[str, float], ready: Sequence[str], key: str | None, draw: Callable[[], float]
) -> str:
    """The version a request without an explicit version goes to. ``ready`` is the READY
    versions oldest first (non-empty); ``draw`` returns uniform numbers in [0, 1)."""
    candidates, cumulative = _candidates(weights, ready)
    if not candidates:
        return ready[-1]
    return candidates[_pick(candidates, cumulative, key, draw() if key is None else 0.0)][0]


@dataclass(slots=True)
class _Plan:
    """What a model's policy means for its current versions; rebuilt when the policy, the
    set of version objects or any state changes, so routing a request is a lookup and a draw."""

    key: tuple[object, ...]
    ready: list[ModelVersion]
    candidates: list[tuple[str, float]]
    cumulative: list[float]
    entries: list[ModelVersion]
    """The entry of each candidate (or the latest READY when nothing is weighted)."""
    stable: str | None


def _plan_key(traffic: TrafficConfig, model: Model) -> tuple[object, ...]:
    return (traffic, *[(e, e.state) for e in model.versions.values()])


def _make_plan(traffic: TrafficConfig, model: Model) -> _Plan:
    ready = model.ready_versions()
    names = [v.version for v in ready]
    candidates, cumulative = _candidates(traffic.weights, names)
    if candidates:
        by_name = {v.version: v for v in ready}
        entries = [by_name[v] for v, _ in candidates]
    else:
        entries = ready[-1:]
        candidates, cumulative = [(v.version, 1.0) for v in entries], [1.0] * len(entries)
    return _Plan(_plan_key(traffic, model), ready, candidates, cumulative, entries, stable_of(traffic, names))


@dataclass(frozen=True, slots=True)
class Route:
    """Where one request goes: the version that answers, its metrics variant, and the
    version that gets a shadow copy (None for most requests)."""

    entry: ModelVersion
    variant: str
    shadow: ModelVersion | None = None
    tolerance: float = 0.0
    """Largest absolute output difference between shadow and primary that is a match."""


class Router:
    """Routes requests by each model's traffic policy: the config's ``traffic`` section
    unless replaced at run time with ``set_policy`` (the model control API)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._draw = self._rng.random
        self._overrides: dict[str, TrafficConfig] = {}
        self._plans: dict[str, _Plan] = {}

    # -- policy -----------------------------------------------------------------------------
    def policy(self, model: Model) -> TrafficConfig:
        override = self._overrides.get(model.name)
        if override is not None:
            return override
        return model.config.traffic if model.config is not None else _DEFAULT_POLICY

    def policy_source(self, name: str) -> str:
        return "runtime" if name in self._overrides else "config"

    def set_policy(self, name: str, traffic: TrafficConfig | None) -> None:
        """Replace a model's policy at run time; ``None`` goes back to its config.yaml."""
        if traffic is None:
            self._overrides.pop(name, None)
        else:
            self._overrides[name] = traffic

    def routing_header(self, model: Model | None) -> str:
        return self.policy(model).sticky_header if model is not None else _DEFAULT_POLICY.sticky_header

    # -- routing ----------------------------------------------------------------------------
    def route(self, model: Model, version: str | None, routing_key: str | None = None) -> ModelVersion:
        return self.select(model, version, routing_key).entry

    def select(self, model: Model, version: str | None, routing_key: str | None = None) -> Route:
        traffic = self.policy(model)
        plan = self._plans.get(model.name)
        if plan is None or plan.key != _plan_key(traffic, model):
            plan = self._plans[model.name] = _make_plan(traffic, model)
        if version is not None:
            entry = model.versions.get(version)
            if entry is None:
                raise ModelNotFound.unknown(model.name, version)
            if not entry.ready:
                raise ModelNotReady(
                    f"model '{model.name}' version {version} is {entry.state.value}"
                    + (f": {entry.public_reason}" if entry.reason else "")
                )
        else:
            if not plan.entries:
                # 503 bodies are public: reasons without paths or library text (repository.py)
                reason = model.public_error or "; ".join(
                    f"version {v.version} {v.state.value}: {v.public_reason}" for v in model.versions.values()
                )
                raise ModelNotReady(
                    f"model '{model.name}' has no ready version" + (f" ({reason})" if reason else "")
                )
            u = self._draw() if routing_key is None and len(plan.entries) > 1 else 0.0
            entry = plan.entries[_pick(plan.candidates, plan.cumulative, routing_key, u)]
        variant = STABLE if entry.version == plan.stable else CANARY
        shadow = None
        if traffic.shadow_version is not None and traffic.shadow_fraction > 0.0:
            candidate = model.versions.get(traffic.shadow_version)
            if (
                candidate is not None
                and candidate is not entry
                and candidate.ready
                and (traffic.shadow_fraction >= 1.0 or self._draw() < traffic.shadow_fraction)
            ):
                shadow = candidate
        return Route(entry, variant, shadow, traffic.shadow_tolerance)

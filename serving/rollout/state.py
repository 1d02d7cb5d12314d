"""What every rollout mode reports and does: the shared shape of a traffic target."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from serving.rollout.prometheus import Side


class RolloutError(Exception):
    """The rollout cannot proceed (nothing to promote, object missing, API refused)."""


@dataclass(frozen=True)
class Revision:
    name: str
    percent: int
    ready: bool
    role: str  # "stable" or "canary"
    detail: str = ""


@dataclass(frozen=True)
class ReplicaStatus:
    """What one serving process (pod, host process or worker) applies, in fleet mode."""

    name: str
    generation: int | None
    """None: the replica could not be read."""
    weights: dict[str, float]
    detail: str = ""
    """Why it lags: unreachable, refused the policy (with the reason), ..."""


@dataclass(frozen=True)
class StableCapacity:
    """Standard mode: the stable predictor's minimum replicas while canaries run. KServe lowers
    it by the canaries' replicas (see serving/rollout/kserve.py, ``effective_stable_min``)."""

    configured: int
    """The minimum the platform sized the stable predictor for (before any raise by the CLI)."""
    effective: int
    """The minimum KServe hands the stable Deployment/HPA/ScaledObject during the canary."""
    canary_replicas: int
    """The replicas KServe subtracts: the canaries it counts (all, or only ready ones)."""
    kept: bool = False
    """``start --keep-stable-capacity`` raised the stable minimum for this rollout."""

    @property
    def lowered(self) -> bool:
        return self.effective < self.configured

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "lowered": self.lowered}

    def lines(self) -> list[str]:
        """What ``rollout start`` and ``status`` print: the floor, and a warning when it drops."""
        how = (
            f"raised to {self.configured + self.canary_replicas} by --keep-stable-capacity"
            if self.kept
            else f"KServe subtracts {self.canary_replicas} canary replica(s)"
        )
        out = [f"stable minimum during the canary: {self.effective} (configured {self.configured}; {how})"]
        if self.lowered:
            out.append(
                f"warning: the stable predictor may shrink to {self.effective} pod(s), below the "
                f"{self.configured} it is sized for, until promote or rollback; "
                "start with --keep-stable-capacity to keep them"
            )
        return out


@dataclass(frozen=True)
class TrafficState:
    """The live split, read from the cluster object or the server's traffic policy."""

    mode: str
    target: str
    revisions: tuple[Revision, ...]
    sides: tuple[Side, Side]
    """Prometheus selectors for (stable, canary)."""
    notes: tuple[str, ...] = field(default_factory=tuple)
    replicas: tuple[ReplicaStatus, ...] = field(default_factory=tuple)
    """Fleet mode: the generation and weights every replica applies."""
    generation: int | None = None
    """Fleet mode: the policy generation in the store."""
    capacity: StableCapacity | None = None
    """Standard mode with a canary: the stable predictor's minimum, configured and effective."""

    @property
    def canary(self) -> Revision | None:
        return next((r for r in self.revisions if r.role == "canary"), None)

    @property
    def stable(self) -> Revision | None:
        return next((r for r in self.revisions if r.role == "stable"), None)

    @property
    def canary_percent(self) -> int:
        canary = self.canary
        return canary.percent if canary is not None else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "target": self.target,
            "revisions": [r.__dict__ for r in self.revisions],
            "canary_percent": self.canary_percent,
            "selectors": {s.name: s.matchers for s in self.sides},
            "notes": list(self.notes),
            **({"stable_capacity": self.capacity.to_dict()} if self.capacity is not None else {}),
            **(
                {"generation": self.generation, "replicas": [r.__dict__ for r in self.replicas]}
                if self.replicas or self.generation is not None
                else {}
            ),
        }


class TrafficTarget(Protocol):
    """One rollout mode. Every method reads the live state first, so runs can be resumed."""

    def state(self) -> TrafficState: ...

    def start(self, percent: int, storage_uri: str | None, canary_version: str | None) -> None: ...

    def set_percent(self, percent: int) -> None: ...

    def promote(self) -> None: ...

    def rollback(self) -> None: ...

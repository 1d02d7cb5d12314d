"""The figures of the status page, as one JSON document (``GET /status/data``).

Gathered on each read from what the server already keeps, nothing recomputed from requests:
the repository index (versions, states, public reasons), each model's traffic policy in this
process (split, generation, last change), the in-process timeline (serving.observability.timeline:
rates, error share, p50/p99 of the last minutes), the cumulative per-version statistics
(stage breakdown), the shadow comparison counters and any model-health sources.

Figures are this process's: with ``--workers N`` each worker answers with its own (the
document says which process and how many there are); ``/metrics`` merges them.
"""

from __future__ import annotations

import os
import time
from collections import deque
from typing import Any

from serving.control.models import ModelControl
from serving.errors import ServingError
from serving.observability.timeline import summarize

EVENTS_KEPT = 20


class StatusData:
    """Builds the status document; remembers the traffic changes it has seen (per process)."""

    def __init__(self, control: ModelControl, workers: int) -> None:
        self._control = control
        self._metrics = control.metrics
        self._workers = workers
        self._started = time.time()
        self._generations: dict[str, int | None] = {}
        self._events: dict[str, deque[dict[str, Any]]] = {}

    def document(self, only: str | None = None) -> dict[str, Any]:
        """Every model (or the one named ``only``) with its versions' figures."""
        rows = self._control.index()
        names = sorted({r["name"] for r in rows})
        if only is not None:
            names = [n for n in names if n == only]
        shadow = self._shadow()
        stats = self._metrics.statistics
        models = []
        for name in names:
            versions = [r for r in rows if r["name"] == name]
            models.append(self._model(name, versions, shadow.get(name, []), stats))
        return {
            "process": {
                "pid": os.getpid(),
                "workers": self._workers,
                "uptime_s": round(time.time() - self._started, 1),
                "scope": "this process" if self._workers == 1 else f"this process, one of {self._workers}",
            },
            "generated_at": round(time.time(), 3),
            "models": models,
        }

    def _model(
        self, name: str, rows: list[dict[str, str]], shadow: list[dict[str, Any]], stats: Any
    ) -> dict[str, Any]:
        traffic = self._traffic(name)
        effective = traffic.get("effective", {})
        split: dict[str, float] = effective.get("shares", {})
        stable = effective.get("stable")
        timeline = dict(self._metrics.timeline.versions(name))
        versions: list[dict[str, Any]] = []
        for row in rows:
            version = row.get("version")
            if version is None:  # a model whose config failed: no versions to show
                continue
            figures = summarize(timeline[version]) if version in timeline else None
            role = "stable" if version == stable else ("canary" if version in split else "")
            if effective.get("shadow") == version:
                role = f"{role} + shadow" if role else "shadow"
            versions.append(
                {
                    "version": version,
                    "state": row["state"],
                    "reason": row.get("reason", ""),
                    "share": split.get(version, 0.0),
                    "role": role,
                    "traffic": figures,
                    "stages": _stages(stats.snapshot(name, version)),
                }
            )
        unrouted = summarize(timeline["none"]) if "none" in timeline else None
        model_error = next((r.get("reason", "") for r in rows if "version" not in r), "")
        return {
            "name": name,
            "state": _model_state(rows),
            "reason": model_error,
            "generation": traffic.get("generation"),
            "source": traffic.get("source"),
            "changed_by": traffic.get("changed_by"),
            "changed_at": traffic.get("changed_at"),
            "split": split,
            "stable": stable,
            "shadow": shadow,
            "shadow_tolerance": traffic.get("policy", {}).get("shadow_tolerance"),
            "versions": versions,
            "unrouted": unrouted,
            "totals": _totals([v["traffic"] for v in versions] + [unrouted]),
            "events": list(self._events.get(name, ())),
            "health": self._metrics.timeline.model_health(name),
        }

    def _traffic(self, name: str) -> dict[str, Any]:
        try:
            traffic = self._control.traffic(name)
        except ServingError:
            return {}  # a model without a loaded entry (its config failed): no policy
        generation = traffic.get("generation")
        if self._generations.get(name) != generation:
            seen_before = name in self._generations
            self._generations[name] = generation
            if seen_before:
                events = self._events.setdefault(name, deque(maxlen=EVENTS_KEPT))
                events.appendleft(
                    {
                        "generation": generation,
                        "split": traffic["effective"]["shares"],
                        "changed_by": traffic.get("changed_by"),
                        "changed_at": traffic.get("changed_at"),
                        "seen_at": round(time.time(), 3),
                    }
                )
        return traffic

    def _shadow(self) -> dict[str, list[dict[str, Any]]]:
        """Shadow comparisons by model: this process's counters (control-path read)."""
        pairs: dict[tuple[str, str, str], dict[str, float]] = {}
        for family in self._metrics.shadow_comparisons.collect():
            for sample in family.samples:
                if not sample.name.endswith("_total"):
                    continue
                labels = sample.labels
                key = (labels["model"], labels["primary_version"], labels["shadow_version"])
                pairs.setdefault(key, {})[labels["result"]] = sample.value
        found: dict[str, list[dict[str, Any]]] = {}
        for (model, primary, shadow), counts in sorted(pairs.items()):
            match, mismatch, error = (int(counts.get(k, 0)) for k in ("match", "mismatch", "error"))
            compared = match + mismatch
            copies = dict(self._metrics.timeline.versions(model, shadow=True)).get(shadow)
            figures = summarize(copies) if copies is not None else None
            found.setdefault(model, []).append(
                {
                    "primary": primary,
                    "shadow": shadow,
                    "match": match,
                    "mismatch": mismatch,
                    "error": error,
                    "agreement": round(match / compared, 4) if compared else None,
                    "rate": figures["rate"] if figures else None,
                    "p99_ms": figures["p99_ms"] if figures else None,
                }
            )
        return found


def _model_state(rows: list[dict[str, str]]) -> str:
    states = {r["state"] for r in rows}
    if "READY" in states:
        return "READY"
    return "FAILED" if "FAILED" in states else sorted(states)[0] if states else "UNAVAILABLE"


def _stages(snapshot: dict[str, Any]) -> dict[str, Any]:
    """Mean time per request in each stage since start (ms): queue wait, compute, and the rest
    of the end-to-end time (decode, routing, validation, encode)."""
    inference = snapshot["inference_stats"]
    done = inference["success"]["count"]
    if not done:
        return {"requests": 0, "queue_ms": None, "compute_ms": None, "other_ms": None, "total_ms": None}
    total = inference["success"]["ns"] / done / 1e6
    queue = _mean_ms(inference["queue"])
    compute = _mean_ms(inference["compute_infer"])
    return {
        "requests": done,
        "queue_ms": round(queue, 3),
        "compute_ms": round(compute, 3),
        "other_ms": round(max(total - queue - compute, 0.0), 3),
        "total_ms": round(total, 3),
    }


def _mean_ms(duration: dict[str, int]) -> float:
    return duration["ns"] / duration["count"] / 1e6 if duration["count"] else 0.0


def _totals(figures: list[dict[str, Any] | None]) -> dict[str, Any]:
    requests = sum(f["requests"] for f in figures if f is not None)
    errors = sum(f["errors"] for f in figures if f is not None)
    window = next((f["window_s"] for f in figures if f is not None), 10)
    return {
        "rate": round(requests / window, 3),
        "error_share": round(errors / requests, 4) if requests else None,
    }

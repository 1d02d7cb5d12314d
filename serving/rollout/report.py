"""What ``serving rollout`` prints: one event per line, as text for people or JSON for pipelines."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

from serving.rollout.decision import Analysis
from serving.rollout.state import TrafficState


@dataclass
class Out:
    json_mode: bool
    stream: TextIO | None = None
    """Where to write; None means the current ``sys.stdout`` at each event."""

    def emit(self, event: str, text: str, **data: Any) -> None:
        stream = self.stream or sys.stdout
        if self.json_mode:
            print(
                json.dumps({"event": event, "time": time.time(), **data}, default=str),
                file=stream,
                flush=True,
            )
        else:
            print(f"[{time.strftime('%H:%M:%S')}] {text}", file=stream, flush=True)


def state_table(state: TrafficState) -> str:
    rows = [("ROLE", "REVISION", "TRAFFIC", "READY")]
    rows += [(r.role, r.name, f"{r.percent}%", "yes" if r.ready else "no") for r in state.revisions]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"{state.target} ({state.mode})"]
    lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    if state.replicas:
        lines.append(f"  replicas (store generation {state.generation}):")
        for r in state.replicas:
            weights = ", ".join(f"{v}={w:g}" for v, w in sorted(r.weights.items(), key=lambda i: int(i[0])))
            generation = "?" if r.generation is None else str(r.generation)
            lines.append(
                f"    {r.name}  generation {generation}  weights {{{weights}}}"
                + (f"  ({r.detail})" if r.detail else "")
            )
    lines += [f"  {line}" for line in (state.capacity.lines() if state.capacity else [])]
    lines += [f"  note: {n}" for n in state.notes]
    return "\n".join(lines)


def analysis_table(a: Analysis) -> str:
    def row(label: str, stable: str, canary: str) -> str:
        return f"  {label:<14}{stable:>14}{canary:>14}"

    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{value * 1000:.1f} ms"

    lines = [
        row("", "stable", "canary"),
        row("requests", f"{a.stable.requests:.0f}", f"{a.canary.requests:.0f}"),
        row("error ratio", f"{a.stable.error_ratio:.2%}", f"{a.canary.error_ratio:.2%}"),
        row("p99", ms(a.stable.p99_s), ms(a.canary.p99_s)),
    ]
    if a.tail is not None:
        lines.append(
            row(f"> {ms(a.tail.edge_s)}", f"{a.tail.stable_share:.2%}", f"{a.tail.canary_share:.2%}")
        )
    for shift in a.prediction_shift:
        lines.append(
            f"  predictions '{shift.output}' (total variation {shift.total_variation:.3f}, "
            f"p {shift.p_value:.2g}, PSI {shift.psi:.3f}):"
        )
        n_s, n_c = sum(shift.stable) or 1.0, sum(shift.canary) or 1.0
        for bucket, s, c in zip(shift.buckets[:12], shift.stable, shift.canary, strict=False):
            lines.append(row(f"  {bucket}", f"{s / n_s:.1%}", f"{c / n_c:.1%}"))
        if len(shift.buckets) > 12:
            lines.append(f"    ... {len(shift.buckets) - 12} more buckets (-o json has them all)")
    lines += [
        "  checks: " + ", ".join(f"{k} {v}" for k, v in a.checks.items()),
        f"  verdict: {a.verdict.value.upper()} — {a.reason}",
    ]
    return "\n".join(lines)

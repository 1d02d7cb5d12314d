"""``serving rollout``: start, status, promote, rollback, analyze and auto.

Exit codes (every subcommand): 0 promote / success, 1 rollback (the canary was judged or
rolled back), 2 hold (not enough evidence yet, or ``auto`` gave up holding), 3 error,
130 interrupted (Ctrl-C; ``auto`` resumes from the live traffic split when run again).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from serving.rollout.decision import EXIT_ERROR, Analysis, Thresholds, Verdict, decide
from serving.rollout.prometheus import PrometheusClient, PrometheusError, parse_duration
from serving.rollout.state import RolloutError, TrafficState, TrafficTarget

DEFAULT_WINDOW_S = 300.0
EXIT_INTERRUPTED = 130


# -- building blocks -------------------------------------------------------------------------
def make_target(args: argparse.Namespace) -> TrafficTarget:
    keep = getattr(args, "keep_stable_capacity", False)
    if args.mode == "inpod" or args.server or args.policy_dir:
        if keep:
            raise RolloutError("--keep-stable-capacity is for Standard mode (KServe's spec.canary[])")
        from serving.rollout.targets import make_inpod_target

        return make_inpod_target(args, args.token or os.environ.get("SERVING_ADMIN_TOKEN"))
    from serving.rollout.kserve import InferenceServiceTarget, load_api_client

    mode = None if args.mode == "auto" else args.mode
    return InferenceServiceTarget(
        load_api_client(args.context),
        args.name,
        args.namespace,
        mode,
        args.canary_name,
        args.kserve_namespace,
        args.kserve_version,
        keep,
    )


def checked_target(args: argparse.Namespace) -> TrafficTarget:
    """The target, after the mode's own check that its traffic split is really applied
    (Standard mode: KServe version and Gateway API; see kserve.split_problem)."""
    target = make_target(args)
    check: Callable[[], None] | None = getattr(target, "check_traffic_split", None)
    if check is not None:
        check()
    return target


def thresholds_from(args: argparse.Namespace) -> Thresholds:
    return Thresholds(
        min_requests=args.min_requests,
        max_error_increase=args.max_error_increase,
        confidence=args.confidence,
        latency_tolerance=args.latency_tolerance,
        latency_slack_s=args.latency_slack_ms / 1000,
        max_p99_s=None if args.max_p99_ms is None else args.max_p99_ms / 1000,
    )


def analyze_state(
    state: TrafficState, prom: PrometheusClient, window_s: float, thresholds: Thresholds
) -> Analysis:
    stable_side, canary_side = state.sides
    return decide(prom.sample(stable_side, window_s), prom.sample(canary_side, window_s), thresholds)


def parse_steps(text: str) -> list[int]:
    try:
        steps = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"steps are percentages like 10,25,50,100, not '{text}'") from None
    if not steps or steps[0] < 1 or steps[-1] > 100:
        raise argparse.ArgumentTypeError("steps are percentages between 1 and 100")
    if steps[-1] != 100:
        steps.append(100)
    return steps


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _percent(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError("a percentage between 0 and 100")
    return value


# -- output ----------------------------------------------------------------------------------
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
        "  checks: " + ", ".join(f"{k} {v}" for k, v in a.checks.items()),
        f"  verdict: {a.verdict.value.upper()} — {a.reason}",
    ]
    return "\n".join(lines)


# -- commands --------------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace, out: Out) -> int:
    state = checked_target(args).state()
    data: dict[str, Any] = {"state": state.to_dict()}
    text = state_table(state)
    if args.prometheus and state.canary is not None:
        analysis = analyze_state(state, PrometheusClient(args.prometheus), args.window, thresholds_from(args))
        data["analysis"] = analysis.to_dict()
        text += "\n" + analysis_table(analysis)
    out.emit("status", text, **data)
    return 0


def cmd_start(args: argparse.Namespace, out: Out) -> int:
    target = make_target(args)
    target.start(args.percent, args.storage_uri, args.canary_version)
    state = target.state()
    out.emit("started", f"canary started at {args.percent}%\n{state_table(state)}", state=state.to_dict())
    return 0


def cmd_promote(args: argparse.Namespace, out: Out) -> int:
    target = make_target(args)
    target.promote()
    state = target.state()
    out.emit("promoted", f"canary promoted to 100%\n{state_table(state)}", state=state.to_dict())
    return 0


def cmd_rollback(args: argparse.Namespace, out: Out) -> int:
    target = make_target(args)
    target.rollback()
    state = target.state()
    out.emit("rolled_back", f"canary rolled back to 0%\n{state_table(state)}", state=state.to_dict())
    return 1


def cmd_analyze(args: argparse.Namespace, out: Out) -> int:
    state = checked_target(args).state()
    if state.canary is None:
        raise RolloutError(f"{state.target} has no canary to analyse")
    analysis = analyze_state(state, PrometheusClient(args.prometheus), args.window, thresholds_from(args))
    out.emit(
        "analysis",
        f"{state.target}: canary {state.canary.name} at {state.canary_percent}%, window {args.window:g}s\n"
        + analysis_table(analysis),
        state=state.to_dict(),
        analysis=analysis.to_dict(),
    )
    return analysis.verdict.exit_code


def run_auto(
    target: TrafficTarget,
    prom: PrometheusClient,
    steps: list[int],
    interval_s: float,
    window_s: float,
    thresholds: Thresholds,
    out: Out,
    max_holds: int = 10,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Analyse, step up or roll back until the canary serves 100 % or is rolled back.

    Every round starts from the live state, so an interrupted run resumes where the traffic
    is: a canary at 25 % continues with the first step above 25 %."""
    holds = 0
    while True:
        state = target.state()
        canary = state.canary
        if canary is None:
            out.emit("done", f"{state.target}: no canary; nothing to roll out", state=state.to_dict())
            return 0
        if canary.percent == 0 and canary.ready:
            out.emit(
                "done",
                f"{state.target}: canary {canary.name} has 0% (rolled back or not started)",
                state=state.to_dict(),
            )
            return 1
        if canary.percent == 0:
            # Not ready yet: the cluster routes nothing to it (Standard mode) until it is.
            holds += 1
            if max_holds and holds >= max_holds:
                out.emit("gave_up", f"canary {canary.name} not ready after {holds} checks", percent=0)
                return 2
            out.emit("wait", f"canary {canary.name} not ready; no traffic yet", canary=canary.name, percent=0)
            sleep(interval_s)
            continue
        current = canary.percent
        index = next((i for i, s in enumerate(steps) if s >= current), len(steps) - 1)
        out.emit(
            "wait",
            f"canary {canary.name} at {current}% (step {index + 1}/{len(steps)}: {steps}); "
            f"next analysis in {interval_s:g}s, at {time.strftime('%H:%M:%S', time.localtime(time.time() + interval_s))}",
            canary=canary.name,
            percent=current,
            step=index + 1,
            steps=steps,
            next_analysis_in_s=interval_s,
        )
        sleep(interval_s)
        state = target.state()
        if state.canary is None or state.canary_percent != current:
            out.emit("changed", "traffic changed under us; re-reading the state", state=state.to_dict())
            continue
        analysis = analyze_state(state, prom, window_s, thresholds)
        out.emit(
            "analysis",
            f"verdict {analysis.verdict.value.upper()} at {current}%: {analysis.reason}",
            percent=current,
            analysis=analysis.to_dict(),
        )
        if analysis.verdict is Verdict.ROLLBACK:
            target.rollback()
            out.emit(
                "rolled_back", f"rolled back: canary {canary.name} now 0%", state=target.state().to_dict()
            )
            return 1
        if analysis.verdict is Verdict.HOLD:
            holds += 1
            if max_holds and holds >= max_holds:
                out.emit(
                    "gave_up", f"{holds} holds in a row at {current}%; traffic left as is", percent=current
                )
                return 2
            continue
        holds = 0
        following = [s for s in steps if s > current]
        if not following or following[0] >= 100:
            target.promote()
            out.emit(
                "promoted", f"promoted: canary {canary.name} now serves 100%", state=target.state().to_dict()
            )
            return 0
        target.set_percent(following[0])
        out.emit("stepped", f"stepped up: {current}% -> {following[0]}%", percent=following[0])


def cmd_auto(args: argparse.Namespace, out: Out) -> int:
    target = checked_target(args)
    return run_auto(
        target,
        PrometheusClient(args.prometheus),
        args.steps,
        args.interval,
        args.window,
        thresholds_from(args),
        out,
        args.max_holds,
    )


# -- parser ----------------------------------------------------------------------------------
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="InferenceService name (in-pod mode: the model name, unless --model)")
    p.add_argument("-n", "--namespace", default="default", help="Kubernetes namespace (default: default)")
    p.add_argument("--context", help="kubeconfig context (default: current; in-cluster when no kubeconfig)")
    p.add_argument(
        "--mode",
        choices=["auto", "knative", "standard", "inpod"],
        default="auto",
        help="auto: from the InferenceService (Serverless -> knative, Standard/RawDeployment -> spec.canary)",
    )
    p.add_argument(
        "--server",
        action="append",
        help="in-pod mode: the serving REST URL (e.g. http://127.0.0.1:8080); with --policy-dir, "
        "repeat it for every process of the fleet. Without both: the InferenceService's pods",
    )
    p.add_argument(
        "--policy-dir",
        type=Path,
        help="in-pod fleet mode on one host: the traffic-policy store (SERVING_TRAFFIC_POLICY_DIR)",
    )
    p.add_argument(
        "--converge-timeout",
        type=_duration,
        default=180.0,
        help="in-pod fleet mode: how long every replica may take to apply a change (3m; a mounted "
        "ConfigMap reaches pods within the kubelet's sync period, about a minute)",
    )
    p.add_argument(
        "--pod-port", type=int, default=8080, help="in-pod mode on Kubernetes: the pods' REST port (8080)"
    )
    p.add_argument("--model", help="in-pod mode: model name (default: NAME)")
    p.add_argument("--token", help="in-pod mode: admin bearer token (default: env SERVING_ADMIN_TOKEN)")
    p.add_argument(
        "--canary-name",
        help="standard mode: which spec.canary[] entry (default: the only one; start: 'canary')",
    )
    p.add_argument(
        "--kserve-namespace", default="kserve", help="standard mode: where KServe's controller runs (kserve)"
    )
    p.add_argument(
        "--kserve-version",
        help="standard mode: the KServe version, when its controller Deployment cannot be read",
    )
    p.add_argument(
        "-o",
        "--output",
        choices=["text", "json"],
        default="text",
        help="text for people; json: one JSON object per event, with the numbers behind each verdict",
    )


def _analysis_flags(p: argparse.ArgumentParser, prometheus_required: bool) -> None:
    p.add_argument("--prometheus", required=prometheus_required, help="Prometheus base URL")
    p.add_argument("--window", type=_duration, help="analysis window (default 5m; auto: --interval)")
    p.add_argument("--min-requests", type=int, default=100, help="canary requests before a verdict (100)")
    p.add_argument(
        "--max-error-increase",
        type=float,
        default=0.02,
        help="error ratio the canary may add (0.02 = 2 points)",
    )
    p.add_argument("--confidence", type=float, default=0.95, help="one-sided confidence (0.95)")
    p.add_argument("--latency-tolerance", type=float, default=0.5, help="relative p99 increase allowed (0.5)")
    p.add_argument("--latency-slack-ms", type=float, default=5.0, help="absolute p99 increase allowed (5 ms)")
    p.add_argument("--max-p99-ms", type=float, help="absolute ceiling on the canary p99")


def add_rollout_parser(sub: Any) -> None:
    rollout = sub.add_parser(
        "rollout",
        help="canary rollouts decided on Prometheus data (exit 0 promote, 1 rollback, 2 hold, 3 error)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmds = rollout.add_subparsers(dest="rollout_command", required=True)

    start = cmds.add_parser("start", help="start a canary with a share of the traffic")
    _common(start)
    start.add_argument("--storage-uri", help="KServe modes: the new model's storageUri")
    start.add_argument("--canary-version", help="in-pod mode: the repository version to canary")
    start.add_argument("--percent", type=_percent, default=10, help="canary traffic share (default 10)")
    start.add_argument(
        "--keep-stable-capacity",
        action="store_true",
        help="standard mode: KServe lowers the stable predictor's minReplicas by the canary's replicas "
        "while it runs; raise it by as much for the rollout (restored on promote or rollback)",
    )
    start.set_defaults(rollout_func=cmd_start)

    status = cmds.add_parser("status", help="traffic per revision, readiness, live comparison")
    _common(status)
    _analysis_flags(status, prometheus_required=False)
    status.set_defaults(rollout_func=cmd_status)

    for name, func, text in (
        ("promote", cmd_promote, "send all traffic to the canary"),
        ("rollback", cmd_rollback, "send all traffic back to stable"),
    ):
        p = cmds.add_parser(name, help=text)
        _common(p)
        p.set_defaults(rollout_func=func)

    analyze = cmds.add_parser("analyze", help="canary vs stable: verdict with numbers; exit code says it")
    _common(analyze)
    _analysis_flags(analyze, prometheus_required=True)
    analyze.set_defaults(rollout_func=cmd_analyze)

    auto = cmds.add_parser("auto", help="analyse, step up or roll back until done (resumable)")
    _common(auto)
    _analysis_flags(auto, prometheus_required=True)
    auto.add_argument(
        "--steps", type=parse_steps, default=[10, 25, 50, 100], help="traffic steps (10,25,50,100)"
    )
    auto.add_argument(
        "--interval", type=_duration, default=60.0, help="time at each step before analysis (1m)"
    )
    auto.add_argument(
        "--max-holds", type=int, default=10, help="give up (exit 2) after N holds in a row; 0 = never"
    )
    auto.set_defaults(rollout_func=cmd_auto)
    rollout.set_defaults(func=main_rollout)


def main_rollout(args: argparse.Namespace) -> int:
    out = Out(json_mode=args.output == "json")
    if getattr(args, "window", None) is None and hasattr(args, "window"):
        args.window = getattr(args, "interval", DEFAULT_WINDOW_S)
    try:
        result: int = args.rollout_func(args, out)
        return result
    except (RolloutError, PrometheusError) as exc:
        out.emit("error", f"error: {exc}", error=str(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        # Nothing is half-done: each change is one request. The live state is the checkpoint.
        out.emit("interrupted", "interrupted; traffic left as it is; run the command again to resume")
        return EXIT_INTERRUPTED

"""``serving rollout``: start, status, promote, rollback, analyze and auto.

Exit codes (every subcommand): 0 promote / success, 1 rollback (the canary was judged or
rolled back), 2 hold (not enough evidence yet, or ``auto`` gave up holding), 3 error,
130 interrupted (Ctrl-C; ``auto`` resumes from the live traffic split when run again).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from serving.rollout.auto import (
    SRM_THRESHOLD,
    analyze_state,
    check_sample_ratio,
    eta,
    eta_text,
    run_auto,
    srm_message,
)
from serving.rollout.decision import EXIT_ERROR, Thresholds, Verdict
from serving.rollout.prometheus import PrometheusClient, PrometheusError, parse_duration
from serving.rollout.report import Out, analysis_table, state_table
from serving.rollout.state import RolloutError, TrafficTarget

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
        max_tail_increase=args.max_tail_increase,
        prediction_shift=args.prediction_shift,
        max_prediction_shift=args.max_prediction_shift,
        accuracy="accuracy" in (args.metric or []),
        max_accuracy_drop=args.max_accuracy_drop,
        min_labels=args.min_labels,
        max_disagreement=getattr(args, "max_disagreement", 0.1),
        max_shadow_diff=getattr(args, "max_shadow_diff", 0.1),
    )


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


# -- commands --------------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace, out: Out) -> int:
    state = checked_target(args).state()
    data: dict[str, Any] = {"state": state.to_dict()}
    text = state_table(state)
    if args.prometheus and state.canary is not None:
        thresholds = thresholds_from(args)
        analysis = analyze_state(state, PrometheusClient(args.prometheus), args.window, thresholds)
        data["analysis"] = analysis.to_dict()
        text += "\n" + analysis_table(analysis)
        found = eta(analysis, thresholds, args.window) if analysis.verdict is Verdict.HOLD else None
        if found is not None:
            data["eta"] = asdict(found)
            text += eta_text(found)
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
    prom = PrometheusClient(args.prometheus)
    srm = check_sample_ratio(state, prom, args.window, args.srm_threshold)
    if srm is not None and srm.mismatch:
        out.emit(
            "sample_ratio_mismatch", "error: " + srm_message(srm), state=state.to_dict(), srm=asdict(srm)
        )
        return EXIT_ERROR
    thresholds = thresholds_from(args)
    analysis = analyze_state(state, prom, args.window, thresholds)
    extra: dict[str, Any] = {} if srm is None else {"srm": asdict(srm)}
    found = eta(analysis, thresholds, args.window) if analysis.verdict is Verdict.HOLD else None
    if found is not None:
        extra["eta"] = asdict(found)
    out.emit(
        "analysis",
        f"{state.target}: canary {state.canary.name} at {state.canary_percent}%, window {args.window:g}s\n"
        + analysis_table(analysis)
        + eta_text(found),
        state=state.to_dict(),
        analysis=analysis.to_dict(),
        **extra,
    )
    return analysis.verdict.exit_code


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
        srm_threshold=args.srm_threshold,
        gate=args.shadow_gate,
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
    p.add_argument(
        "--max-tail-increase",
        type=float,
        default=0.05,
        help="share of requests slower than the latency limit (stable p99 x (1 + tolerance) + slack, "
        "up to a bucket edge) the canary may add (0.05 = 5 points)",
    )
    p.add_argument(
        "--no-prediction-shift",
        dest="prediction_shift",
        action="store_false",
        help="do not judge the predictions (classes / score bins) of the canary against the stable's",
    )
    p.add_argument(
        "--max-prediction-shift",
        type=float,
        default=0.1,
        help="total-variation distance between the prediction distributions tolerated (0.1)",
    )
    p.add_argument(
        "--metric",
        action="append",
        choices=["accuracy"],
        help="also judge accuracy against ground truth (POST /v2/models/{m}/feedback; "
        "the server needs SERVING_FEEDBACK_RETENTION)",
    )
    p.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=0.02,
        help="--metric accuracy: share of wrong answers the canary may add (0.02 = 2 points)",
    )
    p.add_argument(
        "--min-labels", type=int, default=100, help="--metric accuracy: labelled canary answers needed (100)"
    )
    p.add_argument(
        "--srm-threshold",
        type=float,
        default=SRM_THRESHOLD,
        help=f"sample-ratio mismatch: exit 3 when the split's binomial p-value is below it ({SRM_THRESHOLD:g}; 0 = off)",
    )


def add_rollout_parser(sub: Any) -> None:
    rollout = sub.add_parser(
        "rollout",
        help="canary rollouts decided on Prometheus data (exit 0 promote, 1 rollback, 2 hold, 3 error)",
        # the module docstring, with its reStructuredText code marks as plain quotes for a terminal
        description=(__doc__ or "").replace("``", "'"),
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
    auto.add_argument(
        "--shadow-gate",
        action="store_true",
        help="in-pod modes, canary started at --percent 0: first mirror every request to it and "
        "judge its answers against the stable's; refuse it (exit 1) before any user traffic, or start the steps",
    )
    auto.add_argument(
        "--max-disagreement",
        type=float,
        default=0.1,
        help="shadow gate: share of mirrored rows that may answer another class (0.1)",
    )
    auto.add_argument(
        "--max-shadow-diff",
        type=float,
        default=0.1,
        help="shadow gate, models without class outputs: tolerated 90th percentile of the "
        "largest absolute output difference per request (0.1)",
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

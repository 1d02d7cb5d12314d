"""``serving rollout auto``: analyse, step up or roll back until the canary serves 100 % or none.

One round: read the live state, wait ``interval``, check the split (sample-ratio mismatch at
two looks in a row: exit 3, no verdict on biased data), judge the window (serving.rollout.decision, the k-th look
of the run spending its share of alpha), then roll back, hold (saying how many more canary
requests the step needs and about how long that takes) or step up. The window is everything
since the step began (at least ``--window``): a hold adds evidence to the next look instead of
starting over, which is what keeps the power of later, stricter looks. Every round starts from
the live state, so an interrupted run resumes where the traffic is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from serving.rollout.decision import EXIT_ERROR, Analysis, Thresholds, Verdict, decide
from serving.rollout.prometheus import PrometheusClient
from serving.rollout.report import Out
from serving.rollout.shadowgate import judge_shadow
from serving.rollout.state import TrafficState, TrafficTarget
from serving.rollout.statistics import SampleRatio, sample_ratio

SRM_THRESHOLD = 0.0005
"""p-value under which the split is a mismatch (the experimentation platforms' convention)."""


def analyze_state(
    state: TrafficState,
    prom: PrometheusClient,
    window_s: float,
    thresholds: Thresholds,
    look: int | None = None,
) -> Analysis:
    stable_side, canary_side = state.sides
    return decide(
        prom.sample(stable_side, window_s, thresholds.prediction_shift, thresholds.accuracy),
        prom.sample(canary_side, window_s, thresholds.prediction_shift, thresholds.accuracy),
        thresholds,
        look,
    )


def check_sample_ratio(
    state: TrafficState, prom: PrometheusClient, window_s: float, threshold: float
) -> SampleRatio | None:
    """The split's test over ``window_s``; None when switched off (``threshold`` 0) or there
    is nothing to test (no canary, 0 % or 100 %, no requests)."""
    if threshold <= 0 or state.canary is None or not 0 < state.canary_percent < 100:
        return None
    stable_side, canary_side = state.sides
    stable, canary = prom.requests(stable_side, window_s), prom.requests(canary_side, window_s)
    if stable + canary < 1:
        return None
    return sample_ratio(stable, canary, state.canary_percent, threshold)


def srm_message(srm: SampleRatio) -> str:
    return (
        f"sample-ratio mismatch: the canary served {srm.canary:.0f} of {srm.stable + srm.canary:.0f} "
        f"requests ({srm.observed_share:.1%}), {srm.expected_share:.0%} was set (binomial p "
        f"{srm.p_value:.2g} < {srm.threshold:g}); no verdict on a biased split: check selectors, "
        "routes, pinned requests and replicas that did not apply the split "
        "(a split changed inside the window also shows: use a shorter --window)"
    )


@dataclass(frozen=True)
class Eta:
    """How many more canary requests the step needs, and about how long that takes."""

    requests: float
    seconds: float | None
    """None when no canary traffic was seen (no rate to go by)."""


def eta(analysis: Analysis, thresholds: Thresholds, window_s: float) -> Eta | None:
    """A hold's estimate: the larger of the volume still missing and the volume at which the
    error interval would shrink under the allowed increase (its half-width falls as
    1/sqrt(n)); None when the data lean towards a failure or nothing is missing."""
    n = analysis.canary.requests
    needed = max(0.0, thresholds.min_requests - n)
    errors = analysis.errors
    if errors is not None and errors.outcome == "inconclusive" and n > 0:
        # the point difference (the interval's centre is pulled up by its +1 smoothing at small n)
        half = errors.diff_high - (errors.diff_low + errors.diff_high) / 2
        room = thresholds.max_error_increase - (errors.canary_ratio - errors.stable_ratio)
        if room <= 0:
            return None
        needed = max(needed, n * ((half / room) ** 2 - 1))
    for shift in analysis.prediction_shift:
        needed = max(needed, thresholds.min_requests - min(sum(shift.canary), sum(shift.stable)))
    if needed <= 0:
        return None
    rate = n / window_s if window_s > 0 else 0.0
    return Eta(math.ceil(needed), needed / rate if rate > 0 else None)


def eta_text(found: Eta | None) -> str:
    if found is None:
        return ""
    when = (
        "unknown (no canary traffic yet)"
        if found.seconds is None
        else f"~{found.seconds:.0f}s at the current rate"
    )
    return f"; about {found.requests:.0f} more canary requests needed, {when}"


def shadow_gate(
    target: TrafficTarget,
    prom: PrometheusClient,
    first_step: int,
    interval_s: float,
    window_s: float,
    thresholds: Thresholds,
    out: Out,
    max_holds: int,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> tuple[int | None, int]:
    """Step 0: mirror every request to the canary (still at 0 %), judge its answers against
    the ones callers got, then refuse it (exit 1) or start its first step. Returns (exit code
    or None to go on with the steps, looks spent)."""
    mirror: Callable[[bool], tuple[str, str]] | None = getattr(target, "mirror", None)
    model: str | None = getattr(target, "model", None)
    if mirror is None or model is None:
        return None, 0
    stable, canary = mirror(True)
    began = clock()
    out.emit(
        "shadow",
        f"step 0: every request mirrored to canary {canary} (no caller sees its answers); "
        f"judged against stable {stable} in {interval_s:g}s",
        canary=canary,
        stable=stable,
    )
    looks = holds = 0
    while True:
        sleep(interval_s)
        looks += 1
        window = max(window_s, clock() - began)
        verdict = judge_shadow(prom.shadow(model, stable, canary, window), thresholds, looks)
        out.emit(
            "shadow_analysis",
            f"shadow verdict {verdict.verdict.value.upper()} (look {looks}): {verdict.reason}",
            shadow=verdict.to_dict(),
            window_s=window,
        )
        if verdict.verdict is Verdict.ROLLBACK:
            mirror(False)
            target.rollback()
            out.emit(
                "refused",
                f"refused before any user traffic: canary {canary} answers unlike stable {stable}",
                state=target.state().to_dict(),
            )
            return 1, looks
        if verdict.verdict is Verdict.PROMOTE:
            mirror(False)
            target.set_percent(first_step)
            out.emit("stepped", f"shadow gate passed: 0% -> {first_step}%", percent=first_step)
            return None, looks
        holds += 1
        if max_holds and holds >= max_holds:
            mirror(False)
            out.emit("gave_up", f"{holds} shadow holds in a row; canary left at 0%, mirroring off", percent=0)
            return 2, looks


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
    srm_threshold: float = SRM_THRESHOLD,
    clock: Callable[[], float] = time.monotonic,
    gate: bool = False,
) -> int:
    """Analyse, step up or roll back until the canary serves 100 % or is rolled back.

    Every round starts from the live state, so an interrupted run resumes where the traffic
    is: a canary at 25 % continues with the first step above 25 %. Exit codes as the CLI's.
    ``gate``: a canary at 0 % first passes the shadow gate (in-pod modes; the others say they
    cannot mirror and go on with the steps' tests)."""
    holds = 0
    looks = 0
    changed_at: float | None = None  # when this run last moved the split
    step_started: tuple[int, float] | None = None  # (percent, since when this run saw it)
    srm_strikes = 0  # looks in a row whose split failed the sample-ratio test
    while True:
        state = target.state()
        canary = state.canary
        if canary is None:
            out.emit("done", f"{state.target}: no canary; nothing to roll out", state=state.to_dict())
            return 0
        if gate:
            gate = False  # once per run
            if getattr(target, "mirror", None) is None:
                out.emit(
                    "note",
                    f"mode {state.mode} cannot mirror requests to the canary: no shadow gate; "
                    "each step is judged by errors, latency and the prediction-shift test",
                )
            elif canary.percent == 0 and canary.ready:
                code, looks = shadow_gate(
                    target, prom, steps[0], interval_s, window_s, thresholds, out, max_holds, sleep, clock
                )
                if code is not None:
                    return code
                changed_at = clock()
                continue
            else:
                out.emit(
                    "note",
                    f"canary {canary.name} already serves {canary.percent}%: no shadow gate "
                    "(start it with --percent 0 to gate it before any user traffic)",
                )
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
        if step_started is None or step_started[0] != current:
            step_started = (current, clock() if changed_at is None else changed_at)
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
            changed_at = step_started = None
            continue
        window = max(window_s, clock() - step_started[1])
        # The split test sees only time since this run's last change: an older window would
        # mix two splits and look like a mismatch.
        srm_window = window if changed_at is None else max(1.0, min(window, clock() - changed_at))
        srm = check_sample_ratio(state, prom, srm_window, srm_threshold)
        if srm is not None and srm.mismatch:
            # Two looks in a row: a real mismatch (a selector, a route, a stale replica) stays;
            # Prometheus' extrapolated counts over a short window can miss once.
            srm_strikes += 1
            if srm_strikes >= 2:
                out.emit(
                    "sample_ratio_mismatch", "error: " + srm_message(srm), percent=current, srm=asdict(srm)
                )
                return EXIT_ERROR
            holds += 1
            out.emit(
                "sample_ratio_suspect",
                f"split looks off (p {srm.p_value:.2g}); no verdict, checking again at the next look",
                percent=current,
                srm=asdict(srm),
            )
            if max_holds and holds >= max_holds:
                out.emit(
                    "gave_up", f"{holds} holds in a row at {current}%; traffic left as is", percent=current
                )
                return 2
            continue
        srm_strikes = 0
        looks += 1
        analysis = analyze_state(state, prom, window, thresholds, looks)
        extra: dict[str, Any] = {}
        if srm is not None:
            extra["srm"] = asdict(srm)
        found = eta(analysis, thresholds, window) if analysis.verdict is Verdict.HOLD else None
        if found is not None:
            extra["eta"] = asdict(found)
        out.emit(
            "analysis",
            f"verdict {analysis.verdict.value.upper()} at {current}% (look {looks}, window {window:.0f}s): "
            + analysis.reason
            + eta_text(found),
            percent=current,
            window_s=window,
            analysis=analysis.to_dict(),
            **extra,
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
        changed_at = clock()
        out.emit("stepped", f"stepped up: {current}% -> {following[0]}%", percent=following[0])

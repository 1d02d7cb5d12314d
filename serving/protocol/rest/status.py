"""The status page: what one server serves and how it is doing, for a person with a browser.

Read-only routes (no form, no button changes anything):

    GET /status                    overview: every model, its versions, split, rates, latency
    GET /status/models/{m}         one model: versions side by side, stage breakdown, changes
    GET /status/data[?model=m]     the same figures as JSON (serving/protocol/rest/statusdata.py)
    GET /status/static/{file}      the page's stylesheet and script (package data)

Pages are rendered on the server, so the tables and charts are there without JavaScript; a
small script (``static/status.js``, no framework, nothing from the network) polls
``/status/data`` every two seconds and updates the numbers and charts in place. Charts are
inline SVG; p50 is a solid line and p99 a dashed one, states and roles are written out
and marked with a symbol, so nothing depends on telling red from green.

Served on the admin port when ``SERVING_ADMIN_PORT`` is set; on the public port only with
``SERVING_STATUS_PAGE=true`` (it names the models; off by default).
"""

from __future__ import annotations

import math
import time
from html import escape
from importlib import resources
from typing import Any

from fastapi import APIRouter, Query, Response

from serving.control.models import ModelControl
from serving.errors import ModelNotFound
from serving.modelconfig import check_model_name
from serving.protocol.rest.statusdata import StatusData

HEALTH_SHOWN = 10
"""Model-health figures listed on a model's page (the highest; the JSON has them all)."""
PSI_WARN = 0.25
"""A population stability index from which drift is usually called significant."""
POLL_MS = 2000
"""How often the page's script asks for ``/status/data``."""

_STATIC = {"status.css": "text/css; charset=utf-8", "status.js": "text/javascript; charset=utf-8"}
# Everything from this server, nothing inline but SVG attributes: a page that cannot be made
# to load or run anything else.
_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
}
CRUMB = " \u203a "  # the separator after "serving status" on a model's page
NONE = "\u2013"  # an en dash where there is no figure (the script writes the same)
_STATE_MARK = {"READY": "✓", "FAILED": "✗", "LOADING": "…", "UNLOADING": "…", "UNAVAILABLE": NONE}


def status_routes(control: ModelControl, workers: int) -> APIRouter:
    """The status page's routes over ``control`` (its data remembers traffic changes seen)."""
    data = StatusData(control, workers)
    files = {name: (resources.files(__package__) / "static" / name).read_bytes() for name in _STATIC}
    routes = APIRouter()

    @routes.get("/status", summary="Status page: every model, its versions, split, rates, latency")
    async def overview() -> Response:
        return _page("Status", overview_body(data.document()), "/status/data")

    @routes.get("/status/models/{name}", summary="Status page of one model: versions side by side")
    async def model_page(name: str) -> Response:
        check_model_name(name)
        document = data.document(only=name)
        if not document["models"]:
            raise ModelNotFound.unknown(name, detail="not in the repository")
        return _page(name, model_body(document), f"/status/data?model={name}")

    @routes.get("/status/data", summary="The status pages' figures as JSON (?model= for one)")
    async def status_data(model: str | None = Query(None, max_length=128)) -> Any:
        if model is not None:
            check_model_name(model)
        return data.document(only=model)

    @routes.get("/status/static/{file}", summary="The status page's stylesheet and script")
    async def static(file: str) -> Response:
        if file not in files:
            raise ModelNotFound(f"no static file '{file[:64]}'")
        return Response(files[file], media_type=_STATIC[file], headers={"cache-control": "max-age=300"})

    return routes


# -- formatting (the script formats the same way: static/status.js) --------------------------
def fixed(x: float) -> str:
    """Three significant-ish digits without exponents: 0.123, 1.23, 12.3, 123."""
    return f"{x:.{0 if x >= 100 else 1 if x >= 10 else 2}f}"


def fmt_ms(x: float | None) -> str:
    return NONE if x is None else f"{fixed(x)} ms"


def fmt_rate(x: float | None) -> str:
    return NONE if x is None else f"{fixed(x)}/s"


def fmt_share(x: float | None) -> str:
    return NONE if x is None else f"{fixed(x * 100)} %"


def _versions_total(document: dict[str, Any]) -> int:
    return sum(len(m["versions"]) for m in document["models"])


# -- charts -----------------------------------------------------------------------------------
W, H = 120, 32


def spark_paths(values: list[float | None], top: float, bottom: float = 0.0, log: bool = False) -> str:
    """An SVG path over ``values`` scaled to [bottom, top] (logarithmic with ``log``, so p50
    and a p99 ten times higher both stay readable); gaps (None) break the line."""
    if log:
        values = [math.log10(v) if v is not None and v > 0 else None for v in values]
        top, bottom = (math.log10(top), math.log10(bottom)) if top > 0 and bottom > 0 else (1.0, 0.0)
    span = top - bottom if top > bottom else 1.0
    step = W / max(len(values) - 1, 1)
    parts: list[str] = []
    pen_up = True
    for i, value in enumerate(values):
        if value is None:
            pen_up = True
            continue
        y = H - 1 - (H - 2) * min(max((value - bottom) / span, 0.0), 1.0)
        parts.append(f"{'M' if pen_up else 'L'}{i * step:.1f} {y:.1f}")
        pen_up = False
    return " ".join(parts)


def latency_range(p50: list[float | None], p99: list[float | None]) -> tuple[float, float]:
    """(bottom, top) of a latency chart: a little below the lowest p50, the highest p99."""
    top = max((v for v in p99 if v is not None), default=0.0)
    bottom = min((v for v in p50 if v is not None and v > 0), default=0.0) / 1.5
    return bottom, top


def fmt_span(figures: dict[str, Any] | None) -> str:
    """How far back a chart reaches: "30 s", "5 min"."""
    seconds = len(figures["points"]) * figures["step_s"] if figures else 0
    return f"{seconds} s" if seconds < 120 else f"{seconds // 60} min"


def latency_chart(figures: dict[str, Any] | None) -> str:
    points = figures["points"] if figures else []
    p50 = [p["p50_ms"] for p in points]
    p99 = [p["p99_ms"] for p in points]
    bottom, top = latency_range(p50, p99)
    label = f"p50 (solid) and p99 (dashed) latency, last {fmt_span(figures)}, top {fmt_ms(top)}, log scale"
    return (
        f'<svg class="spark" data-chart="latency" viewBox="0 0 {W} {H}" preserveAspectRatio="none" '
        f'role="img" aria-label="{label}"><title>{label}</title>'
        f'<path class="p99" d="{spark_paths(p99, top, bottom, log=True)}" stroke-dasharray="3 2"/>'
        f'<path class="p50" d="{spark_paths(p50, top, bottom, log=True)}"/></svg>'
    )


def rate_chart(figures: dict[str, Any] | None) -> str:
    points = figures["points"] if figures else []
    rates = [p["rate"] for p in points]
    top = max(rates, default=0.0)
    label = f"requests per second, last {fmt_span(figures)}, top {fmt_rate(top)}"
    return (
        f'<svg class="spark" data-chart="rate" viewBox="0 0 {W} {H}" preserveAspectRatio="none" '
        f'role="img" aria-label="{label}">'
        f'<title>{label}</title><path class="rate" d="{spark_paths(rates, top)}"/></svg>'
    )


# -- pages ------------------------------------------------------------------------------------
def _page(title: str, body: str, source: str) -> Response:
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} · serving</title>
<link rel="stylesheet" href="/status/static/status.css">
<script src="/status/static/status.js" defer></script>
</head>
<body data-source="{escape(source)}" data-interval="{POLL_MS}">
{body}
</body></html>"""
    return Response(html, media_type="text/html; charset=utf-8", headers=_HEADERS)


def _header(document: dict[str, Any], crumb: str = "") -> str:
    process = document["process"]
    when = time.strftime("%H:%M:%S", time.localtime(document["generated_at"]))
    return f"""<header>
<h1><a href="/status">serving status</a>{crumb}</h1>
<p class="process">Figures of <strong data-process="scope">{escape(process["scope"])}</strong>
(pid <span data-process="pid">{process["pid"]}</span>, <span data-process="workers">{process["workers"]}</span>
worker process{"" if process["workers"] == 1 else "es"}); rates and latency over the last
10 s, charts over up to 5 min. Updated <time data-process="updated">{when}</time>
<span class="live" data-process="live">(static: reload for new figures)</span></p>
</header>"""


def _state(state: str, reason: str) -> str:
    mark = _STATE_MARK.get(state, "?")
    text = f'<span class="state state-{state.lower()}" data-f="state">{mark} {escape(state)}</span>'
    if reason:
        text += f' <span class="reason" data-f="reason">{escape(reason)}</span>'
    return text


def _split(model: dict[str, Any]) -> str:
    if not model["split"]:
        return "no READY version"
    return " / ".join(f"v{escape(v)} {fmt_share(s)}" for v, s in model["split"].items())


def _model_line(model: dict[str, Any]) -> str:
    changed = ""
    if model["changed_by"]:
        changed = f', last changed by <span data-m="changed_by">{escape(str(model["changed_by"]))}</span>'
    return (
        f'<p class="traffic">Split <strong data-m="split">{_split(model)}</strong>, generation '
        f'<strong data-m="generation">{escape(str(model["generation"]))}</strong> '
        f'(<span data-m="source">{escape(str(model["source"]))}</span>){changed}. '
        f'All versions: <strong data-m="rate">{fmt_rate(model["totals"]["rate"])}</strong>, errors '
        f'<strong data-m="error_share">{fmt_share(model["totals"]["error_share"])}</strong>.</p>'
    )


def _shadow(model: dict[str, Any]) -> str:
    if not model["shadow"]:
        return '<p class="shadow">Shadow: none compared in this process.</p>'
    items = "".join(
        f'<li data-shadow="{escape(s["primary"])}-{escape(s["shadow"])}">v{escape(s["shadow"])} shadowing '
        f'v{escape(s["primary"])}: agreement <strong data-f="agreement">{fmt_share(s["agreement"])}</strong> '
        f"(outputs within {model['shadow_tolerance'] or 0:g}) "
        f'of <span data-f="compared">{s["match"] + s["mismatch"]}</span> compared, '
        f'<span data-f="error">{s["error"]}</span> errors; copies '
        f'<span data-f="rate">{fmt_rate(s["rate"])}</span>, p99 <span data-f="p99_ms">{fmt_ms(s["p99_ms"])}</span></li>'
        for s in model["shadow"]
    )
    return f'<ul class="shadow">{items}</ul>'


_COLUMNS = ("Version", "State", "Role", "Share", "Req/s", "Errors", "p50", "p99", "Latency", "Rate")


def _versions_table(model: dict[str, Any]) -> str:
    head = "".join(f'<th scope="col">{c}</th>' for c in _COLUMNS)
    rows = []
    for v in model["versions"]:
        t = v["traffic"]
        errors = t["error_share"] if t else None
        rows.append(
            f'<tr data-version="{escape(v["version"])}">'
            f'<th scope="row" data-label="Version">v{escape(v["version"])}</th>'
            f'<td data-label="State">{_state(v["state"], v["reason"])}</td>'
            f'<td data-label="Role" data-f="role">{escape(v["role"]) or NONE}</td>'
            f'<td data-label="Share" class="num" data-f="share">{fmt_share(v["share"])}</td>'
            f'<td data-label="Req/s" class="num" data-f="rate">{fmt_rate(t["rate"] if t else None)}</td>'
            f'<td data-label="Errors" class="num" data-f="error_share">{_errors(errors)}</td>'
            f'<td data-label="p50" class="num" data-f="p50_ms">{fmt_ms(t["p50_ms"] if t else None)}</td>'
            f'<td data-label="p99" class="num" data-f="p99_ms">{fmt_ms(t["p99_ms"] if t else None)}</td>'
            f'<td data-label="Latency">{latency_chart(t)}</td>'
            f'<td data-label="Rate">{rate_chart(t)}</td></tr>'
        )
    unrouted = model["unrouted"]
    if unrouted is not None:
        rows.append(
            '<tr data-version="none" class="unrouted"><th scope="row" data-label="Version">none</th>'
            '<td data-label="State" colspan="3">refused before a version was chosen</td>'
            f'<td data-label="Req/s" class="num" data-f="rate">{fmt_rate(unrouted["rate"])}</td>'
            f'<td data-label="Errors" class="num" data-f="error_share">{_errors(unrouted["error_share"])}</td>'
            '<td colspan="4"></td></tr>'
        )
    return (
        f'<div class="table"><table class="versions"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _errors(share: float | None) -> str:
    # A warning sign, not only a colour, once errors are worth a look.
    if share is not None and share >= 0.01:
        return f'<span class="warn">⚠ {fmt_share(share)}</span>'
    return fmt_share(share)


def overview_body(document: dict[str, Any]) -> str:
    sections = []
    for model in document["models"]:
        name = escape(model["name"])
        reason = f' <span class="reason">{escape(model["reason"])}</span>' if model["reason"] else ""
        sections.append(
            f'<section class="model" data-model="{name}">'
            f'<h2><a href="/status/models/{name}">{name}</a> '
            f'<span class="state state-{model["state"].lower()}">{_STATE_MARK.get(model["state"], "?")} '
            f"{escape(model['state'])}</span>{reason}</h2>"
            f"{_model_line(model)}{_versions_table(model)}{_shadow(model)}</section>"
        )
    if not sections:
        sections.append("<p>No models in the repository.</p>")
    legend = (
        '<p class="legend">Charts: <svg class="key" viewBox="0 0 20 6" aria-hidden="true"><path class="p50" '
        'd="M0 3 L20 3"/></svg> p50, <svg class="key" viewBox="0 0 20 6" aria-hidden="true"><path class="p99" '
        'd="M0 3 L20 3" stroke-dasharray="3 2"/></svg> p99 (dashed) on a log scale, rate below; each chart scaled to its own figures; '
        "⚠ marks an error share of 1 % or more.</p>"
    )
    return (
        f"{_header(document)}<main data-versions='{_versions_total(document)}'>"
        f"{legend}{''.join(sections)}</main>"
    )


def model_body(document: dict[str, Any]) -> str:
    model = document["models"][0]
    name = escape(model["name"])
    cards = []
    for v in model["versions"]:
        t, s = v["traffic"], v["stages"]
        cards.append(
            f'<article class="card" data-version="{escape(v["version"])}">'
            f'<h3>v{escape(v["version"])} <span data-f="role">{escape(v["role"])}</span></h3>'
            f"<p>{_state(v['state'], v['reason'])}</p>"
            f'<dl><dt>Share</dt><dd data-f="share">{fmt_share(v["share"])}</dd>'
            f'<dt>Req/s</dt><dd data-f="rate">{fmt_rate(t["rate"] if t else None)}</dd>'
            f'<dt>Errors</dt><dd data-f="error_share">{_errors(t["error_share"] if t else None)}</dd>'
            f'<dt>p50</dt><dd data-f="p50_ms">{fmt_ms(t["p50_ms"] if t else None)}</dd>'
            f'<dt>p99</dt><dd data-f="p99_ms">{fmt_ms(t["p99_ms"] if t else None)}</dd></dl>'
            f"<h4>Latency: p50 solid, p99 dashed (log scale)</h4>{latency_chart(t)}"
            f"<h4>Requests per second</h4>{rate_chart(t)}"
            "<h4>Mean time per request since start</h4>"
            f'<dl class="stages"><dt>queue</dt><dd data-f="queue_ms">{fmt_ms(s["queue_ms"])}</dd>'
            f'<dt>compute</dt><dd data-f="compute_ms">{fmt_ms(s["compute_ms"])}</dd>'
            f'<dt>decode, route, encode</dt><dd data-f="other_ms">{fmt_ms(s["other_ms"])}</dd>'
            f'<dt>end to end</dt><dd data-f="total_ms">{fmt_ms(s["total_ms"])}</dd></dl>'
            "</article>"
        )
    events = "".join(
        f"<li>generation {escape(str(e['generation']))}: "
        f"{' / '.join(f'v{escape(v)} {fmt_share(x)}' for v, x in e['split'].items())}"
        f" (by {escape(str(e['changed_by'] or 'unknown'))})</li>"
        for e in model["events"]
    )
    events_html = (
        f'<ul class="events">{events}</ul>'
        if events
        else "<p>No traffic change seen since this page was first opened in this process.</p>"
    )
    health = model["health"]
    worst = sorted(health.items(), key=lambda kv: -kv[1])[:HEALTH_SHOWN]
    more = (
        f"<p>and {len(health) - len(worst)} more in <code>/status/data</code>.</p>"
        if len(health) > len(worst)
        else ""
    )
    health_html = (
        '<dl class="health">'
        + "".join(f"<dt>{escape(k)}</dt><dd>{v:.3f}{' ⚠' if v >= PSI_WARN else ''}</dd>" for k, v in worst)
        + f'</dl>{more}<p class="legend">Highest first, as of page load; ⚠ marks a PSI of {PSI_WARN} or more.</p>'
        if health
        else "<p>No model-health figures (drift per feature, prediction shift) are reported "
        "in this server yet; they appear here when model monitoring provides them.</p>"
    )
    return (
        f"{_header(document, CRUMB + name)}"
        f"<main data-versions='{_versions_total(document)}'>"
        f'<section class="model" data-model="{name}"><h2>{name}</h2>{_model_line(model)}'
        f'<div class="cards">{"".join(cards)}</div>{_shadow(model)}'
        f"<h3>Traffic changes</h3>{events_html}"
        f"<h3>Model health</h3>{health_html}</section></main>"
    )

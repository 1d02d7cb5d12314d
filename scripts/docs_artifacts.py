"""Tables and pictures of the documentation site drawn from shipped files rather than code: the
Grafana dashboard JSON, the Prometheus rules file and the latest benchmark results. Rendered at
build time by the MkDocs hook (scripts/docs_site.py); nothing here is committed as output.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml
from docs_reference import ROOT, code, one_line, table

DASHBOARD = ROOT / "charts" / "serving" / "files" / "grafana-dashboard.json"
RULES = ROOT / "charts" / "serving" / "files" / "prometheus-rules.yaml"
BENCHMARK_CSV = ROOT / "loadtests" / "latest" / "results.csv"


# -- dashboard and alert rules ----------------------------------------------------------------
def dashboard_markdown(path: Path = DASHBOARD) -> str:
    board = json.loads(path.read_text())
    out = [
        f"**{board.get('title', '')}** (uid `{board.get('uid', '')}`): {one_line(board.get('description'))}\n"
    ]
    variables = [v.get("name", "") for v in board.get("templating", {}).get("list", [])]
    out.append("Variables: " + ", ".join(code(v) for v in variables) + ".\n")
    section: list[list[str]] = []
    title = "(top)"

    def flush() -> None:
        if section:
            out.append(f"### {title}\n")
            out.append(table(["panel", "type", "queries"], section))

    for panel in board.get("panels", []):
        if panel.get("type") == "row":
            flush()
            section, title = [], panel.get("title", "")
            continue
        queries = "<br>".join(code(" ".join(t.get("expr", "").split())) for t in panel.get("targets", []))
        section.append([one_line(panel.get("title")), panel.get("type", ""), queries])
    flush()
    return "\n".join(out)


def alerts_markdown(path: Path = RULES) -> str:
    rules = yaml.safe_load(path.read_text())
    alerts, records = [], []
    for group in rules.get("groups", []):
        for rule in group.get("rules", []):
            if "alert" in rule:
                annotations = rule.get("annotations", {})
                alerts.append(
                    [
                        code(rule["alert"]),
                        code(rule.get("labels", {}).get("severity", "")),
                        code(rule.get("for", "")),
                        one_line(annotations.get("summary") or annotations.get("description")),
                    ]
                )
            else:
                records.append([code(rule["record"]), code(group.get("name", ""))])
    return (
        "## Alerts\n\n"
        + table(["alert", "severity", "for", "summary"], alerts)
        + "\n## Recording rules\n\n"
        + table(["series", "group"], records)
    )


# -- benchmarks -------------------------------------------------------------------------------
def benchmark_rows(path: Path = BENCHMARK_CSV) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def headline(path: Path = BENCHMARK_CSV) -> dict[str, float]:
    """The front page's figure: REST JSON, one row, 64 connections, ONNX, against the peers."""
    rows = benchmark_rows(path)

    def rps(target: str, protocol: str, model: str) -> float:
        for r in rows:
            if (r["target"], r["protocol"], r["model"], r["rows"], r["connections"]) == (
                target, protocol, model, "1", "64",
            ):  # fmt: skip
                return float(r["rps"])
        raise LookupError(f"{path}: no {target}/{protocol}/{model} row at 64 connections")

    ours = rps("ours", "json", "bench-onnx")
    return {
        "ours": ours,
        "x_kserve": ours / rps("kserve", "json", "bench-xgb"),
        "x_mlserver": ours / rps("mlserver", "json", "bench-xgb"),
        "of_floor": ours / rps("raw-asgi", "json", "bench-xgb"),
    }


def benchmark_svg(path: Path = BENCHMARK_CSV) -> str:
    """Requests per second at 64 connections, one row, one bar per server and protocol."""
    bars = [
        (f"{r['target']} {r['protocol']} {r['model']}", float(r["rps"]))
        for r in benchmark_rows(path)
        if r["rows"] == "1" and r["connections"] == "64"
    ]
    width, label_w, bar_h, gap = 760, 300, 18, 6
    top = max(v for _, v in bars)
    height = 30 + len(bars) * (bar_h + gap)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12" role="img">',
        "<title>Requests per second at 64 connections, one row per request</title>",
        '<text x="0" y="16" font-weight="bold">req/s at 64 connections (1 row per request)</text>',
    ]
    for i, (label, value) in enumerate(bars):
        y = 28 + i * (bar_h + gap)
        w = (width - label_w - 70) * value / top
        colour = "#3f51b5" if label.startswith("ours") else "#9e9e9e"
        parts += [
            f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end">{label}</text>',
            f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}"/>',
            f'<text x="{label_w + w + 4:.1f}" y="{y + 13}">{value:,.0f}</text>',
        ]
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


BENCHMARK_MD = BENCHMARK_CSV.with_name("results.md")


def benchmark_results(path: Path = BENCHMARK_MD) -> str:
    """The harness's own summary of the latest run (ratio tables, lifts, regression gate)."""
    return path.read_text()

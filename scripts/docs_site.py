"""MkDocs hooks of the documentation site (``hooks:`` in mkdocs.yml).

- ``on_config``: pages in docs/ that the nav does not list yet (a page another branch added)
  are appended under "More", so the nav stays explicit without a new page breaking the build.
- ``on_files``: adds generated files that exist only in the built site: the benchmark chart
  (SVG from loadtests/latest/results.csv) and the benchmark PNG the harness wrote.
- ``on_page_markdown``: replaces ``<!-- generated: NAME -->`` with the table NAME, generated from
  the code (scripts/docs_reference.py). An unknown NAME fails the build.

Nothing generated is written to docs/: the reference pages commit only their prose and the
placeholder. Nothing is downloaded and nothing outside this checkout is read: a clone builds
the site alone (the REST messages come from serving/protocol/rest/schema.py, not KServe's spec).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

# scripts/ is not a package: its modules import each other by name, as tests/docs/sitegen.py does.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import docs_artifacts as art
import docs_reference as ref

ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDER = re.compile(r"^<!--\s*generated:\s*([\w.-]+)\s*-->\s*$", re.M)
log = logging.getLogger("mkdocs.hooks.serving")


def _headline() -> str:
    h = art.headline()
    return (
        f"**{h['ours']:,.0f} req/s** for REST JSON at 64 connections, one row per request: "
        f"{h['x_kserve']:.1f}x KServe's server and {h['x_mlserver']:.1f}x MLServer on the same "
        f"machine in the same run, {h['of_floor']:.0%} of the raw-ASGI floor.\n"
    )


GENERATORS: dict[str, Callable[[], str]] = {
    "settings": ref.settings_markdown,
    "config": ref.config_markdown,
    "cli": ref.cli_markdown,
    "rest-api": ref.rest_markdown,
    "metrics": ref.metrics_markdown,
    "errors": ref.error_markdown,
    "alerts": art.alerts_markdown,
    "dashboard": art.dashboard_markdown,
    "benchmark-results": art.benchmark_results,
    "benchmark-headline": _headline,
}
"""Placeholder NAME -> the function that writes its Markdown."""


def _nav_pages(nav: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(nav, str):
        found.add(nav)
    elif isinstance(nav, list):
        for item in nav:
            found |= _nav_pages(item)
    elif isinstance(nav, dict):
        for value in nav.values():
            found |= _nav_pages(value)
    return found


def on_config(config: Any) -> Any:
    docs = Path(config["docs_dir"])
    listed = _nav_pages(config["nav"])
    missing = sorted(
        p.relative_to(docs).as_posix()
        for p in docs.rglob("*.md")
        if p.relative_to(docs).as_posix() not in listed
    )
    if missing and config["nav"] is not None:
        log.info("pages not in the nav, listed under 'More': %s", ", ".join(missing))
        config["nav"].append({"More": missing})
    return config


def on_files(files: Files, config: Any) -> Files:
    files.append(File.generated(config, "benchmarks/chart.svg", content=art.benchmark_svg()))
    png = ROOT / "loadtests" / "latest" / "results.png"
    if png.exists():
        files.append(File.generated(config, "benchmarks/results.png", abs_src_path=str(png)))
    return files


def generate(name: str) -> str:
    generator = GENERATORS.get(name)
    if generator is None:
        raise ValueError(f"<!-- generated: {name} -->: no such generator ({', '.join(GENERATORS)})")
    return generator()


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    return PLACEHOLDER.sub(lambda m: generate(m.group(1)), markdown)

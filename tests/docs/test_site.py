"""The documentation site builds with ``mkdocs build --strict`` (broken links, missing pages and
bad anchors fail), offline, with its reference pages generated from the code; and the README is
a front page whose former sections all live on the site."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.sitegen import hooks
from tests.docs.sitegen import reference as ref
from tests.server_process import ROOT

MKDOCS = [sys.executable, "-m", "mkdocs"]
# Any download during the build fails: the proxies point at a closed loopback port.
OFFLINE = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "no_proxy": ""}
OFFLINE |= {key.upper(): value for key, value in OFFLINE.items()}

# The README's section titles before it became a front page (issue 17): each is a heading on the
# site now (the same text, or a heading that starts with it).
FORMER_README_SECTIONS = [
    "What it is",
    "Calling the demo models",
    "REST API",
    "Model repository and config.yaml",
    "Command line",
    "Native XGBoost predict",
    "Versions, canaries, shadow traffic and the model control API",
    "Rollouts",
    "gRPC",
    "Tested clients",
    "Observability: metrics, access logs, dashboard, alerts",
    "Access logs",
    "Dashboard",
    "Alerts and SLOs",
    "Failure behaviour",
    "Deploying on Kubernetes",
    "Dynamic batching",
    "Hot path and worker processes",
    "Benchmark: side by side with KServe and MLServer",
]


def build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MKDOCS, "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **os.environ,
            **OFFLINE,
            # a clone has no reference folder: the site must build without one
            "SERVING_REFERENCE_DIR": "/nonexistent",
            "NO_MKDOCS_2_WARNING": "1",
        },
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    run = build(ROOT / "mkdocs.yml", out)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "WARNING" not in run.stderr, run.stderr[-4000:]
    return out


def page(site: Path, name: str) -> str:
    return (site / name / "index.html").read_text()


def headings(text: str) -> list[str]:
    found = re.findall(r"<h[1-6][^>]*>(.*?)</h[1-6]>", text, re.S)
    return [html.unescape(re.sub(r"<[^>]+>", "", h)).replace("¶", "").strip() for h in found]


def test_site_builds_strict_and_offline(site: Path) -> None:
    assert (site / "index.html").exists() and (site / "search" / "search_index.json").exists()
    for nav_page in ("getting-started/first-canary", "reference/settings", "benchmarks", "design/docs"):
        assert (site / nav_page / "index.html").exists(), nav_page


def test_former_readme_sections_are_on_the_site(site: Path) -> None:
    everywhere = [h for p in site.rglob("*.html") for h in headings(p.read_text())]
    missing = [t for t in FORMER_README_SECTIONS if not any(h == t or h.startswith(t) for h in everywhere)]
    assert not missing, f"README sections not found as headings on the site: {missing}"


def test_reference_pages_are_generated_from_the_code(site: Path) -> None:
    settings = page(site, "reference/settings")
    assert all(r.name in settings for r in ref.settings_rows())
    config = page(site, "reference/config")
    assert all(html.escape(r.name) in config for r in ref.config_rows())
    metrics = page(site, "reference/metrics")
    assert all(r.name in metrics for r in ref.metric_rows())
    errors = page(site, "reference/errors")
    assert all(f"<code>{c.__name__}</code>" in errors for c in ref.error_classes())
    cli = page(site, "reference/cli")
    for path, (parser, _) in ref.cli_commands().items():
        assert not path or f"serving {path}" in cli
        assert all(html.escape(flag) in cli for a in ref.cli_arguments(parser) for flag in a.option_strings)
    rest = page(site, "reference/rest-api")
    assert "request_input" in rest and "<code>datatype</code>" in rest  # the inference messages
    assert (
        "/v2/repository/models/{name}/load" in rest
        and "/v2/models/{model_name}/versions/{model_version}/infer" in rest
    )
    dashboard = page(site, "reference/dashboard")
    assert "Requests per second" in dashboard and "histogram_quantile" in dashboard
    assert "ServingAvailabilityBudgetBurnFast" in page(site, "reference/alerts")
    # nothing generated is committed: the sources hold prose and the placeholder only
    for name in ("settings", "config", "metrics", "errors", "cli", "rest-api", "alerts", "dashboard"):
        source = (ROOT / "docs" / "reference" / f"{name}.md").read_text()
        assert f"<!-- generated: {name} -->" in source
    assert "SERVING_PREDICT_THREADS" not in (ROOT / "docs" / "reference" / "settings.md").read_text()


def test_diagrams_and_chart(site: Path) -> None:
    for name in ("concepts/request-path", "guides/rollouts"):
        assert '<pre class="mermaid">' in page(site, name), name
    svg = (site / "benchmarks" / "chart.svg").read_text()
    assert svg.startswith("<svg") and "ours json bench-onnx" in svg
    assert 'src="chart.svg"' in page(site, "benchmarks") or "chart.svg" in page(site, "benchmarks")


def test_strict_build_fails_on_a_bad_anchor_a_missing_page_and_a_missing_nav_entry(tmp_path: Path) -> None:
    """The validation settings of mkdocs.yml, on a two-page site: each mistake alone fails."""
    cases = {
        "anchor": ("[x](b.md#no-such-heading)", ["a.md", "b.md"]),
        "page": ("[x](missing.md)", ["a.md", "b.md"]),
        "nav": ("fine", ["a.md", "b.md", "gone.md"]),
    }
    for case, (link, nav) in cases.items():
        docs = tmp_path / case / "docs"
        docs.mkdir(parents=True)
        (docs / "a.md").write_text(f"# A\n\n{link}\n")
        (docs / "b.md").write_text("# B\n\n## Here\n")
        config = tmp_path / case / "mkdocs.yml"
        config.write_text(f"INHERIT: {ROOT / 'mkdocs.yml'}\ndocs_dir: docs\nhooks: []\nnav: {nav}\n")
        run = build(config, tmp_path / case / "site")
        assert run.returncode != 0, (case, run.stderr[-2000:])
    good = tmp_path / "anchor" / "docs" / "a.md"
    good.write_text("# A\n\n[x](b.md#here)\n")
    run = build(tmp_path / "anchor" / "mkdocs.yml", tmp_path / "anchor" / "site")
    assert run.returncode == 0, run.stderr[-2000:]


def test_readme_is_a_front_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    blocks = re.findall(r"```bash\n(.+?)\n```", readme, re.S)
    assert blocks[:2] == [
        "bash scripts/install.sh && .venv/bin/serving serve --model-repo model_repo",
        "bash scripts/test.sh",
    ]
    assert readme.index(blocks[1]) < readme.index("## ")  # both commands come first
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    for target in re.findall(r"\]\((docs/[^)#]*)", readme):
        assert (ROOT / target).exists(), target
    # the figure the benchmarks page shows, from loadtests/latest/results.csv
    figure = hooks.GENERATORS["benchmark-headline"]().strip()
    assert figure in " ".join(readme.split()), (
        f"README's 'Latest benchmark' is not the latest run's; write: {figure}"
    )
    assert "](docs/benchmarks.md)" in readme


def test_pages_missing_from_the_nav_are_listed_under_more(tmp_path: Path) -> None:
    """A page merged from another branch before anyone put it in the nav: reachable, no failure."""
    (tmp_path / "guide").mkdir()
    for name in ("index.md", "guide/listed.md", "guide/new.md", "late.md"):
        (tmp_path / name).write_text("# x\n")
    config = {
        "docs_dir": str(tmp_path),
        "nav": [{"Home": "index.md"}, {"Guides": [{"L": "guide/listed.md"}]}],
    }
    assert hooks.on_config(config)["nav"][-1] == {"More": ["guide/new.md", "late.md"]}

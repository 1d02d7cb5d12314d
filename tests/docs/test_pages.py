"""The runnable blocks (``<!-- run: NAME -->``) of the README and the documentation site, pasted
into bash against one real server: the getting-started tutorial (install, first request, first
canary), the rollout guide's in-pod commands, the fleet canary page's two-worker store, and the
README's first request, with the outputs
the pages show compared to what the commands print."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.docs.runblocks import Script, Step, run_script, runnable_blocks, same_json
from tests.server_process import ROOT, free_port

DOCS = ROOT / "docs"
# One bash session, in this order: the install page starts the server (with an admin token),
# the others call it, and the first-canary page's "stop" block ends it.
TUTORIAL = [
    ("docs/getting-started/install.md", "tutorial"),
    ("README.md", "tutorial"),
    ("docs/getting-started/first-request.md", "tutorial"),
    ("docs/getting-started/first-canary.md", "tutorial"),
    ("docs/guides/rollouts.md", "tutorial"),
    ("docs/canary.md", "tutorial"),
    ("docs/batch.md", "tutorial"),
    ("docs/getting-started/first-canary.md", "stop"),
]


def workspace(tmp_path: Path) -> Path:
    """A directory laid out like a fresh clone after the quick start: ``.venv`` (the venv
    running the tests) and ``model_repo``."""
    home = tmp_path / "clone"
    home.mkdir()
    (home / ".venv").symlink_to(Path(sys.prefix))
    (home / "model_repo").symlink_to(ROOT / "model_repo")
    return home


def test_every_runnable_block_is_run() -> None:
    """A marker on a page this test does not run (a new page, a typo in NAME) fails here."""
    pages = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
    marked = {
        (page.relative_to(ROOT).as_posix(), name)
        for page in pages
        for name in runnable_blocks(page.read_text())
    }
    assert marked == set(TUTORIAL)


def test_tutorial_runs_as_pasted(tmp_path: Path) -> None:
    steps: list[Step] = []
    for page, name in TUTORIAL:
        scripts = runnable_blocks((ROOT / page).read_text())
        assert name in scripts, f"{page} has no <!-- run: {name} --> blocks"
        steps += scripts[name].steps
    # the outputs the pages show are checked, not only the exit codes
    assert sum(step.shows_output for step in steps) >= 15
    result = run_script(
        Script("tutorial", steps),
        cwd=workspace(tmp_path),
        work=tmp_path / "work",
        ports={8080: free_port(), 8081: free_port(), 8082: free_port(), 8083: free_port(), 9090: free_port()},
        env={"SERVING_DRAIN_DELAY_SECONDS": "0"},
        timeout=280,
    )
    assert result.returncode == 0, result.output[-4000:]
    assert not result.mismatches, "\n".join(result.mismatches)


def test_runner_splits_commands_and_shown_outputs() -> None:
    page = "\n".join(
        [
            "text",
            "<!-- run: x -->",
            "```bash",
            "# prose",
            "A=1",
            "curl -s u -d '{",
            "  1}'",
            '# {"a": [1,',
            "#  2]}",
            "echo done  # trailing prose",
            "echo two lines",
            "#>  indented",
            "#> second",
            "```",
            "```bash",
            "not runnable",
            "```",
        ]
    )
    steps = runnable_blocks(page)["x"].steps
    assert [(s.command, s.expected, s.text) for s in steps] == [
        ("A=1\ncurl -s u -d '{\n  1}'", '{"a": [1,2]}', None),
        ("echo done  # trailing prose\necho two lines", None, " indented\nsecond"),
    ]
    assert isinstance(steps[0], Step) and steps[0].line == 5


def test_runner_compares_numbers_with_tolerance_and_everything_else_exactly() -> None:
    assert same_json({"a": [0.9918511, "x"]}, {"a": [0.99185115, "x"]}, 1e-4)
    assert not same_json({"a": [0.95]}, {"a": [0.99185115]}, 1e-4)
    assert not same_json({"a": 1, "b": 2}, {"a": 1}, 1e-4)
    assert not same_json(["1"], [1], 1e-4)
    assert same_json({"pid": 4121, "t": "12:00"}, {"pid": "...", "t": "..."}, 1e-4)
    assert not same_json({"pid": 4121}, {"pid": "...", "t": "..."}, 1e-4)


@pytest.mark.parametrize("shown", ["same\nlines", "other\nlines"])
def test_runner_compares_plain_text_outputs(tmp_path: Path, shown: str) -> None:
    steps = [Step("printf 'same\\nlines\\n'", None, 1, shown)]
    result = run_script(Script("t", steps), cwd=tmp_path, work=tmp_path / "w", ports={})
    assert result.returncode == 0
    assert bool(result.mismatches) == (shown != "same\nlines")

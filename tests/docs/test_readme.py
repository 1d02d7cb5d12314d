"""The README's runnable blocks (``<!-- run: NAME -->``) pasted into bash against a real
server: the quick start's calls with their shown outputs, and the canary walkthrough."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.docs.runblocks import Step, run_script, runnable_blocks, same_json
from tests.server_process import ROOT, free_port

README = ROOT / "README.md"


def workspace(tmp_path: Path) -> Path:
    """A directory laid out like a fresh clone after the quick start: ``.venv`` (the venv
    running the tests) and ``model_repo``."""
    home = tmp_path / "clone"
    home.mkdir()
    (home / ".venv").symlink_to(Path(sys.prefix))
    (home / "model_repo").symlink_to(ROOT / "model_repo")
    return home


@pytest.mark.parametrize("name", ["demo", "canary"])
def test_readme_walkthrough_runs_as_pasted(tmp_path: Path, name: str) -> None:
    scripts = runnable_blocks(README.read_text())
    assert name in scripts, f"README has no <!-- run: {name} --> blocks"
    script = scripts[name]
    if name == "demo":  # the outputs the page shows are checked, not only the exit code
        assert sum(step.expected is not None for step in script.steps) >= 5
    result = run_script(
        script,
        cwd=workspace(tmp_path),
        work=tmp_path / "work",
        ports={8080: free_port(), 8081: free_port()},
        env={"SERVING_DRAIN_DELAY_SECONDS": "0"},
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
            "```",
            "```bash",
            "not runnable",
            "```",
        ]
    )
    steps = runnable_blocks(page)["x"].steps
    assert [(s.command, s.expected) for s in steps] == [
        ("A=1\ncurl -s u -d '{\n  1}'", '{"a": [1,2]}'),
        ("echo done  # trailing prose", None),
    ]
    assert isinstance(steps[0], Step) and steps[0].line == 5


def test_runner_compares_numbers_with_tolerance_and_everything_else_exactly() -> None:
    assert same_json({"a": [0.9918511, "x"]}, {"a": [0.99185115, "x"]}, 1e-4)
    assert not same_json({"a": [0.95]}, {"a": [0.99185115]}, 1e-4)
    assert not same_json({"a": 1, "b": 2}, {"a": 1}, 1e-4)
    assert not same_json(["1"], [1], 1e-4)

"""Run the shell blocks of a Markdown page, so documented commands cannot rot.

A fenced ``bash`` block preceded by the line ``<!-- run: NAME -->`` is runnable; every
runnable block of one NAME in a page forms one script, run in page order by one ``bash``
(so variables, ``cd`` and background jobs carry over from block to block) with
``set -e -o pipefail``: any failing command fails the script.

Outputs shown in a block are compared: comment lines right after a command that start with
``# {`` or ``# [`` (continued on lines starting with ``#  ``) are the JSON the command
printed; numbers must agree to ``rel_tol`` (the page shows what one machine printed), and the
string ``"..."`` stands for any value (a time, a process id). Comment lines starting with
``#>`` are plain text the command printed, compared line by line. Other comments are prose
and are ignored.

Pages use the ports a user would (8080 REST, 8081 gRPC, and others for a second server);
``run_script`` rewrites them to free ones, in URLs (``localhost:8080``) and in port flags
(``--http-port 8082``), and passes ``SERVING_HTTP_PORT``/``SERVING_GRPC_PORT``, so a
``serving serve`` in a block needs no flags for 8080 and 8081. The script runs in its own process group, killed at the end
(a background server a failing script left behind goes too).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MARKER = re.compile(r"^<!--\s*run:\s*([\w.-]+)\s*-->\s*$")
FENCE = re.compile(r"^```(\w*)")


@dataclass
class Step:
    command: str
    expected: str | None = None  # JSON text the command printed, as the page shows it
    line: int = 0
    text: str | None = None  # plain text the command printed (``#>`` lines)

    @property
    def shows_output(self) -> bool:
        return self.expected is not None or self.text is not None


@dataclass
class Script:
    name: str
    steps: list[Step] = field(default_factory=list)


def runnable_blocks(text: str) -> dict[str, Script]:
    """The page's runnable scripts by NAME, each a list of steps in page order."""
    scripts: dict[str, Script] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        marker = MARKER.match(lines[i])
        if marker and i + 1 < len(lines) and (fence := FENCE.match(lines[i + 1])):
            if fence.group(1) not in ("bash", "sh", "shell"):
                raise ValueError(f"line {i + 1}: a runnable block must be bash, not {fence.group(1)!r}")
            end = i + 2
            while end < len(lines) and not lines[end].startswith("```"):
                end += 1
            script = scripts.setdefault(marker.group(1), Script(marker.group(1)))
            script.steps.extend(_steps(lines[i + 2 : end], first_line=i + 3))
            i = end
        i += 1
    return scripts


def _steps(block: list[str], first_line: int) -> list[Step]:
    steps: list[Step] = []
    command: list[str] = []
    expected: list[str] = []
    shown: list[str] = []
    start = first_line

    def flush() -> None:
        nonlocal command, expected, shown
        if command:
            text = "".join(line.lstrip("#").strip() for line in expected) or None
            steps.append(Step("\n".join(command), text, start, "\n".join(shown) if shown else None))
        command, expected, shown = [], [], []

    for offset, line in enumerate(block):
        stripped = line.strip()
        is_comment = stripped.startswith("#")
        if is_comment and command and stripped.startswith("#>"):
            shown.append(stripped[2:].removeprefix(" ").rstrip())
            continue
        if (
            is_comment
            and command
            and (stripped.startswith(("# {", "# [")) or (expected and line.startswith("#  ")))
        ):
            expected.append(stripped)
            continue
        if is_comment or not stripped:
            flush()
            continue
        if expected or shown:
            flush()
        if not command:
            start = first_line + offset
        command.append(line)
    flush()
    return steps


def same_json(got: Any, want: Any, rel_tol: float) -> bool:
    if want == "...":
        return True
    if isinstance(want, float) or isinstance(got, float):
        return isinstance(got, int | float) and math.isclose(got, want, rel_tol=rel_tol, abs_tol=1e-7)
    if isinstance(want, list):
        return (
            isinstance(got, list)
            and len(got) == len(want)
            and all(same_json(g, w, rel_tol) for g, w in zip(got, want, strict=True))
        )
    if isinstance(want, dict):
        return (
            isinstance(got, dict)
            and got.keys() == want.keys()
            and all(same_json(got[k], want[k], rel_tol) for k in want)
        )
    return bool(got == want)


@dataclass
class Result:
    returncode: int
    output: str
    mismatches: list[str]


def run_script(
    script: Script,
    cwd: Path,
    work: Path,
    ports: dict[int, int],
    env: dict[str, str] | None = None,
    timeout: float = 300,
    rel_tol: float = 1e-4,
) -> Result:
    """Run ``script`` in ``cwd``; ``ports`` maps the page's ports to the ones to use."""
    work.mkdir(parents=True, exist_ok=True)
    parts = ["set -e -o pipefail"]
    for n, step in enumerate(script.steps):
        command = step.command
        for page_port, port in ports.items():
            command = re.sub(
                rf"(localhost:|127\.0\.0\.1:|--(?:http|grpc|metrics|admin)-port[ =]){page_port}\b",
                rf"\g<1>{port}",
                command,
            )
        if step.shows_output:
            parts.append(f"{{\n{command}\n}} > {work}/step{n}.out")
        else:
            parts.append(command)
    (work / "script.sh").write_text("\n".join(parts) + "\n")
    full_env = {**os.environ, **(env or {})}
    if 8080 in ports:
        full_env["SERVING_HTTP_PORT"] = str(ports[8080])
    if 8081 in ports:
        full_env["SERVING_GRPC_PORT"] = str(ports[8081])
    proc = subprocess.Popen(
        ["bash", str(work / "script.sh")],
        cwd=cwd,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever the script left running
    mismatches = []
    for n, step in enumerate(script.steps):
        if not step.shows_output or proc.returncode != 0:
            continue
        printed = (work / f"step{n}.out").read_text()
        got_text = printed.strip()
        if step.text is not None:
            got_lines = [line.rstrip() for line in printed.rstrip().splitlines()]
            if got_lines != step.text.splitlines():
                mismatches.append(
                    f"line {step.line}: printed\n{got_text[:400]}\n  the page shows\n{step.text[:400]}"
                )
            continue
        assert step.expected is not None  # a checked step without text has expected JSON
        try:
            got, want = json.loads(got_text), json.loads(step.expected)
        except ValueError as exc:
            mismatches.append(f"line {step.line}: {exc}: got {got_text[:300]!r}")
            continue
        if not same_json(got, want, rel_tol):
            mismatches.append(
                f"line {step.line}: printed {got_text[:400]}\n  the page shows {step.expected[:400]}"
            )
    return Result(proc.returncode, output.decode(errors="replace"), mismatches)

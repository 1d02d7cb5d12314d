"""Run a Dockerfile's build without a container engine: each RUN, COPY, ENV, ARG and WORKDIR in
order, in a directory that stands in for the image's root filesystem.

No container engine runs here, so this is how the tests check that the Dockerfile's own install
steps produce a working server. Paths the image creates (/opt, /src, /mnt, /tmp) are mapped
into the stand-in root; base-image paths (/usr, /bin, ...) are the host's, and ``python`` is the
interpreter running the tests (its version must match the Dockerfile's PYTHON_VERSION).
What is not run: FROM (the base image), USER, EXPOSE, and the final stage's RUN steps, which may
only create the user (checked). A ``RUN --mount=type=cache,target=T`` gets a persistent host
directory for T (as BuildKit keeps one between builds), so repeated test runs reuse downloads.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_DIRS = ("opt", "src", "mnt", "tmp")
_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")
_MOUNT = re.compile(r"^--mount=(\S+)\s+")
CACHE_MOUNTS = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "serving-dockerfile-mounts"


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int

    def json_args(self) -> list[str]:
        parsed: list[str] = json.loads(self.args)
        return parsed


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages); continuation lines joined, comments dropped."""
    logical: list[tuple[int, str]] = []
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        logical.append((start, buffer + stripped))
        buffer = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name))
        elif not stages:
            assert keyword == "ARG", f"line {number}: only ARG may precede FROM"
            key, _, value = args.partition("=")
            global_args[key] = value
        else:
            stages[-1].instructions.append(Instruction(keyword, args, number))
    return global_args, stages


def expand(value: str, env: dict[str, str]) -> str:
    return _VAR.sub(lambda m: env.get(m.group(1) or m.group(2), ""), value)


def env_pairs(args: str) -> list[tuple[str, str]]:
    """ENV a=1 b="x y" -> [(a, 1), (b, x y)] (the key=value form only)."""
    pairs = re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', args)
    return [(k, v[1:-1] if v.startswith('"') else v) for k, v in pairs]


class Rootfs:
    """Maps image paths into ``root`` and runs a stage's steps there."""

    def __init__(self, root: Path, context: Path, python: str = sys.executable) -> None:
        self.root, self.context = root, context
        self.shims = root / ".shims"
        self.shims.mkdir(parents=True, exist_ok=True)
        # `python` in RUN steps is the base image's interpreter; here, the one running the tests.
        (self.shims / "python").symlink_to(python)
        self.pattern = re.compile(r"(?<![\w.])/(" + "|".join(IMAGE_DIRS) + r")(?=/|\b|$)")

        self.cache_targets: dict[str, Path] = {}

    def map(self, text: str) -> str:
        for target, host in self.cache_targets.items():
            text = text.replace(target, str(host))
        return self.pattern.sub(lambda m: f"{self.root}/{m.group(1)}", text)

    def _mounts(self, stage: Stage) -> None:
        for step in stage.all("RUN"):
            while match := _MOUNT.match(step.args):
                options = dict(o.split("=", 1) for o in match.group(1).split(","))
                assert options.get("type") == "cache", f"line {step.line}: only cache mounts are emulated"
                host = CACHE_MOUNTS / options["target"].strip("/").replace("/", "_")
                host.mkdir(parents=True, exist_ok=True)
                self.cache_targets[options["target"]] = host
                step.args = step.args[match.end() :]

    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH"}}
        env["PATH"] = f"{self.shims}:{env.get('PATH', '/usr/bin:/bin')}"
        return env

    def run_stage(
        self, stage: Stage, args: dict[str, str], drop_env: frozenset[str] = frozenset(), run: bool = True
    ) -> dict[str, str]:
        """Apply the stage (its RUN steps only if ``run``); returns its final environment, ENV
        values mapped into the root, without the variables named in ``drop_env``."""
        self._mounts(stage)
        env = {**self.base_env(), **args}
        cwd = self.root
        for step in stage.instructions:
            if step.keyword == "ARG":
                key, _, value = step.args.partition("=")
                env.setdefault(key, expand(value, env))
            elif step.keyword == "ENV":
                for key, value in env_pairs(step.args):
                    if key not in drop_env:
                        env[key] = self.map(expand(value, env))
            elif step.keyword == "WORKDIR":
                cwd = Path(self.map(expand(step.args, env)))
                cwd.mkdir(parents=True, exist_ok=True)
            elif step.keyword == "COPY":
                self._copy(step, env, cwd)
            elif step.keyword == "RUN" and run:
                subprocess.run(["/bin/sh", "-c", self.map(step.args)], cwd=cwd, env=env, check=True)
        return env

    def _copy(self, step: Instruction, env: dict[str, str], cwd: Path) -> None:
        parts = step.args.split()
        if parts[0].startswith("--from="):
            # Between stages the mapped paths are the same directory: nothing to move.
            src, dest = (self.map(expand(p, env)) for p in parts[1:])
            assert src == dest, f"line {step.line}: COPY --from with a different destination"
            return
        *sources, dest = parts
        target = Path(self.map(expand(dest, env)))
        if not target.is_absolute():
            target = cwd / target
        for source in sources:
            origin = self.context / source
            if origin.is_dir():
                shutil.copytree(
                    origin, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target / origin.name)

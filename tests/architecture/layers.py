"""The package's layers, top to bottom, and the imports between its modules, read with ``ast``.

One list is the source of truth: ``docs/design/architecture.md`` shows it (generated from
``LAYERS``) and ``test_layers.py`` holds the code to it. A module may import modules of its own
layer group or of any layer below; never above, and never a sibling package of the same layer
(the adapters, the rollout CLI and offline scoring know nothing of each other). Imports under
``if TYPE_CHECKING:`` are left out: they name a type for the checker and never run, so they
cannot tie the load order (``serving.inference`` names the tracing span type that way).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "serving"

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("the command line", ("serving.cli",)),
    ("the process entry: one worker in-process or a supervisor of N", ("serving.supervisor",)),
    ("one serving process: assembly, signals, drain", ("serving.server",)),
    (
        "entry points: protocol adapters, the rollout CLI, offline scoring",
        ("serving.protocol", "serving.rollout", "serving.scoring"),
    ),
    ("control: model load/unload, the traffic-policy file and its syncer", ("serving.control",)),
    ("the request core: dataplane, router, shadow, validation, limits", ("serving.core",)),
    ("the model store: repository, demo models, export", ("serving.repository",)),
    ("calling a version: predictor and dynamic batcher", ("serving.predict",)),
    ("runtimes: registry, one module per framework, fast paths, warm-up", ("serving.runtimes",)),
    ("observability: metrics, access log, statistics, tracing, payloads", ("serving.observability",)),
    (
        "foundation: settings, errors, config schema, request types, labels, runtime registry, CLI flags",
        (
            "serving",
            "serving.settings",
            "serving.errors",
            "serving.extras",
            "serving.modelconfig",
            "serving.datatypes",
            "serving.inference",
            "serving.labels",
            "serving.platforms",
            "serving.cliflags",
        ),
    ),
]
"""Layer name and the modules or packages in it, from the top. Within the foundation layer
modules import one another (modelconfig uses datatypes and errors); a cycle among them still fails."""

SIBLINGS_INDEPENDENT = True


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "generated" not in p.parts}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The project modules ``path`` imports at run time (anywhere in the file, functions too)."""
    tree = ast.parse(path.read_text(), str(path))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.body:
                skip.update(id(n) for n in ast.walk(child))
    found: set[str] = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, base] if base else pkg)
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for target in targets:
            # the longest known module the name starts with (``from serving.x import y``: y may be a name)
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target.startswith("serving") and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports(path, name, known) for name, path in mods.items()}


def layer_of(module: str) -> tuple[int, str]:
    """(layer index, the group entry it belongs to) for a module."""
    best: tuple[int, str] | None = None
    for index, (_, groups) in enumerate(LAYERS):
        for group in groups:
            # the package face "serving" holds only itself; every other group its submodules too
            inside = module == group or (group != "serving" and module.startswith(group + "."))
            if inside and (best is None or len(group) > len(best[1])):
                best = (index, group)
    if best is None:
        raise LookupError(f"{module} is in no layer: add it to tests/architecture/layers.py")
    return best


@dataclass(frozen=True)
class Violation:
    importer: str
    imported: str
    why: str

    def __str__(self) -> str:
        return f"{self.importer} -> {self.imported}: {self.why}"


def violations(edges: dict[str, set[str]]) -> list[Violation]:
    found = []
    for importer, targets in sorted(edges.items()):
        low, low_group = layer_of(importer)
        for imported in sorted(targets):
            high, high_group = layer_of(imported)
            if high < low:
                found.append(
                    Violation(importer, imported, f"runs up from '{LAYERS[low][0]}' to '{LAYERS[high][0]}'")
                )
            elif high == low and low_group != high_group and low != len(LAYERS) - 1:
                found.append(
                    Violation(
                        importer, imported, f"sibling packages of one layer ({low_group}, {high_group})"
                    )
                )
    return found


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out

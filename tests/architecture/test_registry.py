"""The runtime registry (serving/platforms.py) is the only place the package spells a platform
name as a value: every other module asks the registry."""

from __future__ import annotations

import ast

from serving import platforms
from tests.architecture.layers import PACKAGE

ALLOWED = {
    # KServe's own predictor keys (its framework shortcuts, a vocabulary of KServe's, not ours)
    ("serving/rollout/kserve.py", "MODEL_KEYS"),
}


def _spelled(names: set[str]) -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).as_posix()
        if rel == "serving/platforms.py" or "generated" in path.parts:
            continue
        tree = ast.parse(path.read_text(), rel)
        skip: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
                skip.add(id(node.value))  # docstrings and comments-as-strings name platforms freely
            if isinstance(node, ast.Assign):
                targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
                if any((rel, t) in ALLOWED for t in targets):
                    skip.update(id(n) for n in ast.walk(node.value))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in names and id(node) not in skip:
                found.append(f"{rel}:{node.lineno}: {node.value!r}")
    return found


def test_no_module_but_the_registry_spells_a_platform_name() -> None:
    assert _spelled(set(platforms.names())) == []


def test_the_check_sees_a_spelled_name() -> None:
    # the same walk over a name that does appear as a value elsewhere in the package ("stable")
    assert any("'stable'" in hit for hit in _spelled({"stable"}))

"""No fixed sleep waits for something to happen in the tests (issue 26).

Every ``time.sleep`` / ``asyncio.sleep`` call under tests/ must either be inside a poll loop that
checks a deadline (a name with "deadline" in it, or a clock read such as ``time.monotonic()``, in
the loop), or carry a ``# deliberate: why`` comment on its line or the line above: a fake slow
runtime, a slow client, a pause that is itself the behaviour under test. To wait for a
condition, use ``tests.waiting.wait_until``.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SLEEPS = {("time", "sleep"), ("asyncio", "sleep")}
CLOCKS = {("time", "monotonic"), ("time", "perf_counter"), ("time", "time"), ("loop", "time")}
MARK = "# deliberate:"


def _dotted(node: ast.expr) -> tuple[str, str] | None:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return node.value.id, node.attr
    return None


def _sleep_names(tree: ast.Module) -> set[str]:
    """Bare names bound to a sleep by ``from time import sleep`` (``as`` too)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("time", "asyncio"):
            names |= {alias.asname or alias.name for alias in node.names if alias.name == "sleep"}
    return names


def _checks_a_deadline(loop: ast.While | ast.For | ast.AsyncFor) -> bool:
    for node in ast.walk(loop):
        if isinstance(node, ast.Name) and "deadline" in node.id.lower():
            return True
        if isinstance(node, ast.Attribute) and "deadline" in node.attr.lower():
            return True
        if isinstance(node, ast.Call) and _dotted(node.func) in CLOCKS:
            return True
    return False


def fixed_sleeps(source: str, filename: str = "<test>") -> list[str]:
    """``file:line: code`` of every sleep that is neither in a deadline loop nor marked."""
    tree = ast.parse(source, filename)
    lines = source.splitlines()
    bare = _sleep_names(tree)
    parents: dict[ast.AST, ast.AST] = {}
    for parent in ast.walk(tree):
        for child in ast.iter_child_nodes(parent):
            parents[child] = parent
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        is_sleep = _dotted(node.func) in SLEEPS or (isinstance(node.func, ast.Name) and node.func.id in bare)
        if not is_sleep:
            continue
        line = node.lineno
        if MARK in lines[line - 1] or (line >= 2 and lines[line - 2].strip().startswith(MARK)):
            continue
        # the loops around the call, up to the enclosing function
        at: ast.AST = node
        in_deadline_loop = False
        while at in parents and not isinstance(at, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            at = parents[at]
            if isinstance(at, ast.While | ast.For | ast.AsyncFor) and _checks_a_deadline(at):
                in_deadline_loop = True
                break
        if not in_deadline_loop:
            found.append((line, f"{filename}:{line}: {lines[line - 1].strip()}"))
    return [text for _, text in sorted(found)]


def test_every_sleep_in_the_tests_polls_with_a_deadline_or_says_why() -> None:
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        offenders += fixed_sleeps(path.read_text(), str(path.relative_to(TESTS.parent)))
    assert not offenders, (
        "fixed sleeps in tests: poll the condition with tests.waiting.wait_until, or mark a "
        "deliberate delay with '# deliberate: why' on its line or the line above:\n" + "\n".join(offenders)
    )


def test_the_check_tells_a_poll_from_a_fixed_sleep() -> None:
    # spelled through format(), so that grepping tests/ for sleeps lists only real calls
    source = textwrap.dedent(
        """
        import asyncio, time
        from time import sleep as nap

        def waits_blindly():
            {sleep}(1)  # the server should have noticed by now

        async def waits_blindly_too():
            await {async_sleep}(0.5)

        def naps():
            nap(0.1)

        def loops_without_a_deadline(done):
            while not done():
                {sleep}(0.1)

        def polls(done):
            deadline = time.monotonic() + 5
            while not done():
                assert time.monotonic() < deadline
                {sleep}(0.1)

        def polls_on_the_clock(done):
            start = time.monotonic()
            while time.monotonic() - start < 4:
                {sleep}(0.1)

        def slow_runtime():
            {sleep}(0.2)  # deliberate: a slow model

        def slow_client():
            # deliberate: the client trickles its body
            {sleep}(0.2)
        """
    ).format(sleep="time.sleep", async_sleep="asyncio.sleep")
    assert [f.split(": ", 1)[0] for f in fixed_sleeps(source)] == [
        "<test>:6",
        "<test>:9",
        "<test>:12",
        "<test>:16",
    ]

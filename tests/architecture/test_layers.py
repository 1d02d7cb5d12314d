"""The package's layers hold: imports point down only, siblings stay apart, no import circles.

The graph is read from the source with ``ast`` (tests/architecture/layers.py), so the
test needs nothing installed and names the offending import when it fails.
"""

from __future__ import annotations

import pytest

from tests.architecture import layers


@pytest.fixture(scope="module")
def edges() -> dict[str, set[str]]:
    return layers.graph()


def test_every_module_has_a_layer(edges: dict[str, set[str]]) -> None:
    for module in edges:
        layers.layer_of(module)


def test_a_module_outside_every_layer_is_reported() -> None:
    with pytest.raises(LookupError, match=r"serving\.newthing is in no layer"):
        layers.layer_of("serving.newthing")


def test_imports_point_down_the_layers(edges: dict[str, set[str]]) -> None:
    assert [str(v) for v in layers.violations(edges)] == []


def test_no_import_circles(edges: dict[str, set[str]]) -> None:
    assert layers.cycles(edges) == []


def test_the_checker_sees_an_upward_import() -> None:
    """The check can fail: a core module importing the protocol package is reported, and so is a
    circle between two modules."""
    upward = {"serving.core.router": {"serving.protocol.edge"}, "serving.protocol.edge": set()}
    found = layers.violations(upward)
    assert [(v.importer, v.imported) for v in found] == [("serving.core.router", "serving.protocol.edge")]
    sibling = {"serving.scoring.cli": {"serving.rollout.cli"}, "serving.rollout.cli": set()}
    assert "sibling" in str(layers.violations(sibling)[0])
    assert layers.cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b"]]


def test_type_checking_imports_are_left_out(tmp_path: pytest.TempPathFactory) -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "from serving.errors import ServingError\n"
        "if TYPE_CHECKING:\n"
        "    from serving.core.router import Router\n"
    )
    path = tmp_path / "probe.py"  # type: ignore[operator]
    path.write_text(source)
    found = layers.imports(path, "serving.probe", {"serving.errors", "serving.core.router"})
    assert found == {"serving.errors"}


def test_the_architecture_page_shows_these_layers() -> None:
    """docs/design/architecture.md's table is LAYERS, in order (names and members)."""
    page = (layers.PACKAGE.parent / "docs" / "design" / "architecture.md").read_text()
    table = page.split("<!-- layers: start -->")[1].split("<!-- layers: end -->")[0]
    rows = [line.split("|")[1:-1] for line in table.strip().splitlines()[2:]]
    shown = [(cells[1].strip(), tuple(m.strip(" `") for m in cells[2].split(","))) for cells in rows]
    assert shown == [(name, groups) for name, groups in layers.LAYERS]

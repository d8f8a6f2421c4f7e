"""The library's modules import each other without a circle at run time.

Every import of a library module counts, at module level or inside a function,
except those under ``if TYPE_CHECKING:``, which never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import realtime_gateway

PACKAGE = Path(realtime_gateway.__file__).parent


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and (
        (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
        or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")
    )


def _imported(module: str, tree: ast.AST) -> set[str]:
    found: set[str] = set()
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        if _type_checking_only(node):
            assert isinstance(node, ast.If)
            pending.extend(node.orelse)
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("realtime_gateway."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("realtime_gateway."):
                    found.add(alias.name.split(".")[1])
        pending.extend(ast.iter_child_nodes(node))
    found.discard(module)
    return found


def import_graph() -> dict[str, set[str]]:
    """Each library module and the library modules it imports at run time."""
    graph = {}
    for path in sorted(PACKAGE.glob("*.py")):
        if path.stem in ("__init__", "__main__"):
            continue
        graph[path.stem] = _imported(path.stem, ast.parse(path.read_text()))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A circle of imports, as the modules along it, or ``None``."""
    state: dict[str, str] = {}
    trail: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        trail.append(module)
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == "open":
                return [*trail[trail.index(imported) :], imported]
            if imported not in state and (cycle := visit(imported)):
                return cycle
        trail.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_no_import_cycle_among_library_modules() -> None:
    graph = import_graph()
    assert "_gateway" in graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_type_checking_imports_do_not_count() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "from ._x import y\n"
        "if TYPE_CHECKING:\n    from ._z import w\n"
        "def f():\n    from ._v import u\n"
    )
    assert _imported("_m", tree) == {"_x", "_v"}


def test_the_gateway_does_not_need_the_built_in_namespaces() -> None:
    # The publish API asks a namespace for what it publishes (UpdatePublisher)
    # instead of knowing the built-in classes.
    assert "_namespaces" not in import_graph()["_gateway"]

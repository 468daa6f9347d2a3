"""The direction of imports inside the package (docs/development.md, "Layers").

Engines (what dumps, restores, prunes, stores and encrypts) never import the bookkeeping
around a run (history, monitoring), the actions that run them, the scheduler or the CLI;
and no two packages import each other, however indirectly. Imports inside functions count.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "daemon" / "sealdump"

ENGINES = {
    "archive",
    "backup",
    "binlog",
    "restore",
    "retention",
    "storage",
    "keys",
    "source",
    "config",
}
ABOVE_ENGINES = {"history", "monitoring", "actions", "scheduling", "cli"}
# Who may import whom among the layers above the engines.
FORBIDDEN = {
    **dict.fromkeys(ENGINES, ABOVE_ENGINES),
    "history": {"monitoring", "actions", "scheduling", "cli"},
    "monitoring": {"actions", "scheduling", "cli"},
    "actions": {"scheduling", "cli"},
    "scheduling": {"cli"},
}


def unit_of(module: str) -> str:
    """``sealdump.restore.load`` -> ``restore``; ``sealdump.log`` -> ``log``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports(path: Path, module: str) -> Iterator[str]:
    """Every ``sealdump`` module ``path`` imports, at any depth of its code."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("sealdump"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target.startswith("sealdump"):
                yield target


def unit_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Which unit (sub-package or top-level module) imports which other units."""
    graph: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        relative = path.relative_to(root.parent).with_suffix("")
        module = ".".join(relative.parts).removesuffix(".__init__")
        source = unit_of(module)
        graph.setdefault(source, set())
        for target in imports(path, module):
            if unit_of(target) not in (source, "sealdump"):
                graph[source].add(unit_of(target))
    return graph


def violations(graph: Mapping[str, set[str]]) -> list[str]:
    """``A imports B`` for every edge the layering forbids."""
    return sorted(
        f"{source} imports {target}"
        for source, targets in graph.items()
        for target in targets
        if target in FORBIDDEN.get(source, set())
    )


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """One path per cycle found between units (empty when the graph is acyclic)."""
    found: list[list[str]] = []
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                found.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_engines_import_neither_bookkeeping_nor_callers() -> None:
    assert violations(unit_graph()) == []


def test_no_import_cycle_between_packages() -> None:
    assert cycles(unit_graph()) == []


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    """The same checks over a small package that breaks both rules."""
    root = tmp_path / "sealdump"
    (root / "restore").mkdir(parents=True)
    (root / "history").mkdir()
    (root / "restore" / "load.py").write_text(
        "def f():\n    from sealdump.history.store import History\n"
    )
    (root / "history" / "store.py").write_text("from ..restore import load\n")
    graph = unit_graph(root)
    assert violations(graph) == ["restore imports history"]
    assert cycles(graph) == [["history", "restore", "history"]]

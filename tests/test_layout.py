"""The package's shape: no import cycle anywhere in ``monitor``, counting every import
(function-level and ``TYPE_CHECKING`` ones too, which hide cycles rather than remove them)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import monitor

PACKAGE_DIR = Path(monitor.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> Iterator[str]:
    """The package's modules ``path`` imports; ``from a import b`` counts b when b is one."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module in known:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & known
            yield from submodules or {node.module}


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in PACKAGE_DIR.rglob("*.py")}
    return {name: set(imported_modules(path, set(paths))) for name, path in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle, once each, as the path that closes it (depth-first search)."""
    found: list[list[str]] = []
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        for target in sorted(graph[name]):
            if target in path:
                found.append([*path[path.index(target) :], target])
            elif target not in done:
                visit(target, [*path, target])
        done.add(name)

    for name in sorted(graph):
        if name not in done:
            visit(name, [name])
    return found


def test_the_graph_sees_the_package() -> None:
    graph = import_graph()
    assert "monitor.atlas.client" in graph["monitor.atlas"]
    assert "monitor.atlas.oauth" in graph["monitor.atlas.client"]
    assert "monitor.simulator" in graph["monitor.cli"]  # function-level imports count too


def test_no_module_of_the_package_imports_itself_back() -> None:
    assert cycles(import_graph()) == []

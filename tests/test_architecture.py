"""The package's shape, checked from its source: no import cycles, and the engine imports none of
the apps (CLI, outputs, evaluation, benchmark, demo, integrations, auxiliary-text generation,
datasets). Every ``import`` statement counts, those inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
APPS = ("cli", "outputs", "evaluation", "benchmark", "demo", "integrations", "auxtexts", "datasets")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in (SRC / "itaclip").rglob("*.py")}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The itaclip modules ``name`` imports (``from pkg import sub`` counts as importing ``sub``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, result, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return result


def test_the_graph_sees_imports_inside_functions():
    graph = _graph()
    # settings imports the method registry; the bench imports the random test models inside a function
    assert "itaclip.engine.methods" in graph["itaclip.engine.settings"]
    assert "itaclip.engine.weights.random" in graph["itaclip.benchmark.inputs"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_one_that_imports_it_back():
    assert _cycles(_graph()) == []


@pytest.mark.parametrize("app", APPS)
def test_the_engine_imports_no_app(app):
    graph = _graph()
    offenders = {name: sorted(t for t in targets if t.startswith(f"itaclip.{app}"))
                 for name, targets in graph.items() if name.startswith("itaclip.engine")}
    assert {name: found for name, found in offenders.items() if found} == {}

"""The project's modules import downward only: no import circle between two modules, counting
imports inside functions too (a lazy import hides a circle from Python, not from a reader)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("netaug", "search", "analysis")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            edges |= {t for t in targets if t in files and t != name}
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_planted_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_one_that_imports_it_back():
    assert cycles(import_graph()) == []


def test_netaug_never_imports_search_or_analysis():
    graph = import_graph()
    bad = {m: sorted(t for t in targets if t.split(".")[0] != "netaug")
           for m, targets in graph.items() if m.split(".")[0] == "netaug"}
    assert {m: t for m, t in bad.items() if t} == {}


def private_imports(folder: Path) -> list[str]:
    """`from <package> import _name` (or `<package>._module`) in the scripts of a folder: what a script must not
    lean on, since a package's private names may change without notice."""
    found = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
                found += [f"{path.name}: {n}" for n in names if any(p.startswith("_") for p in n.split("."))]
    return found


def test_the_private_import_finder_finds_a_planted_one(tmp_path):
    (tmp_path / "s.py").write_text("from search.arms import _num, Arm\nfrom netaug.io import write_parquet\n")
    assert private_imports(tmp_path) == ["s.py: search.arms._num"]


def test_bench_scripts_import_no_private_name_of_the_packages():
    assert private_imports(ROOT / "bench") == []
